"""examples/generalization_gap.py: per-stage error on a split, against a hand-written reference."""

from __future__ import annotations

import timm
import torch

import timm_anytime  # noqa: F401
from tests.scripts import load_script
from timm_anytime.data import InMemoryDataset


def _example():
    return load_script("examples/generalization_gap.py")


def test_stage_errors_equal_each_stage_run_alone_in_float64() -> None:
    """The errors come from one evaluation pass; the reference runs each stage on its own
    (``set_active_stage(k); model(x)``), normalizes by hand, and counts mistakes one batch at once."""
    torch.manual_seed(0)
    model = timm.create_model("anytime_cifar_resnet20_w124", num_classes=10, width=0.5).double()
    model.train()  # the function must switch to eval mode itself
    images = torch.randint(0, 256, (37, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (37,))
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    # BatchNorm running statistics far from (0, 1), so eval mode and training mode disagree
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    errors = _example().stage_errors(model, InMemoryDataset(images, labels, [str(c) for c in range(10)]), mean, std, 8)

    model.eval()
    x = (images.double() / 255 - torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(
        std, dtype=torch.float64
    ).view(1, 3, 1, 1)
    expected = []
    with torch.no_grad():
        for stage in range(1, model.num_stages + 1):
            model.set_active_stage(stage)
            wrong = (model(x).argmax(1) != labels).sum().item()
            expected.append(100.0 * wrong / len(labels))
    assert errors == expected
    assert len(set(errors)) > 1  # the stages differ: a mix-up of stages would show
