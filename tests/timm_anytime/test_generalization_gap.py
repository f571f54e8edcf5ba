"""examples/generalization_gap.py: per-stage error on a split, against a hand-written reference."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

import timm_anytime  # noqa: F401
from tests.scripts import load_script
from tests.timm_anytime.runs import toy_cifar
from timm_anytime.data import InMemoryDataset
from timm_anytime.train import TrainConfig


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
    expected = _stage_errors_by_hand(model, x, labels)
    assert errors == expected
    assert len(set(errors)) > 1  # the stages differ: a mix-up of stages would show


def _images_by_hand(folder: Path, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``per_class`` images (by file name) of each class folder, decoded with PIL and
    normalized with CIFAR-10's published mean and std, in float64, with their labels."""
    images, labels = [], []
    for label, name in enumerate(sorted(path.name for path in folder.iterdir())):
        for file in sorted((folder / name).iterdir())[:per_class]:
            with Image.open(file) as image:
                images.append(torch.from_numpy(np.array(image.convert("RGB"))))
            labels.append(label)
    mean = torch.tensor([0.4914, 0.4822, 0.4465], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616], dtype=torch.float64).view(1, 3, 1, 1)
    return (torch.stack(images).permute(0, 3, 1, 2).double() / 255 - mean) / std, torch.tensor(labels)


def _stage_errors_by_hand(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Each stage run alone (``set_active_stage(k); model(x)``), its mistakes counted in one batch."""
    errors = []
    with torch.no_grad():
        for stage in range(1, model.num_stages + 1):
            model.set_active_stage(stage)
            errors.append(100.0 * (model(x).argmax(1) != y).sum().item() / len(y))
    return errors


def test_a_run_folder_is_measured_on_its_own_training_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--run``: a run folder's weights and config (its training subset, its dataset's
    normalization), against each stage run alone on images decoded and normalized by hand, with the
    weights loaded by hand in float64."""
    data = toy_cifar(tmp_path / "cifar", per_class=6)
    run = tmp_path / "run"
    run.mkdir()
    model, kwargs = "anytime_cifar_resnet20_w124", {"width": 0.5}
    config = TrainConfig(model=model, model_kwargs=kwargs, dataset="cifar10", data_dir=str(data), train_per_class=4)
    config.save(run / "config.yaml")
    train, test = _images_by_hand(data / "train", 4), _images_by_hand(data / "test", 6)
    torch.manual_seed(0)
    trained = timm.create_model(model, num_classes=10, **kwargs)
    optimizer = torch.optim.Adam(trained.parameters(), lr=0.03)
    for _ in range(10):  # fit the 40 training images a little: lower error there than on the test images
        loss = sum(F.cross_entropy(logits, train[1]) for logits in trained.forward_stages(train[0].float()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # BatchNorm's running statistics of these images under the final weights (one pass, momentum None),
    # so that eval mode sees what training fitted: statistics averaged over the ten steps' moving
    # weights left the eval-mode training error at chance on one VM (90% at stage 3, test 90%)
    for module in trained.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    with torch.no_grad():
        trained.forward_stages(train[0].float())
    save_file(trained.state_dict(), str(run / "model.safetensors"))

    monkeypatch.setattr(sys, "argv", ["generalization_gap.py", "--run", str(run), "--threads", "1"])
    _example().main()
    out = capsys.readouterr().out
    assert "final weights" in out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["1"], ["2"], ["3"])]
    measured = {"train": [float(row[1]) for row in rows], "test": [float(row[2]) for row in rows]}

    reference = timm.create_model(model, num_classes=10, **kwargs).double().eval()
    reference.load_state_dict(
        {k: v.double() if v.is_floating_point() else v for k, v in load_file(run / "model.safetensors").items()}
    )
    expected = {"train": _stage_errors_by_hand(reference, *train), "test": _stage_errors_by_hand(reference, *test)}
    assert measured == {split: pytest.approx(errors, abs=0.006) for split, errors in expected.items()}  # 2 decimals
    assert all(fit < held for fit, held in zip(expected["train"], expected["test"], strict=True))  # a swap would show

    # --weights: another file of the run's model (here the untrained network) is what gets measured
    untrained = timm.create_model(model, num_classes=10, **kwargs)
    save_file(untrained.state_dict(), str(run / "other.safetensors"))
    monkeypatch.setattr(
        sys, "argv", ["generalization_gap.py", "--run", str(run), "--weights", str(run / "other.safetensors")]
    )
    _example().main()
    out = capsys.readouterr().out
    assert f"weights {run / 'other.safetensors'}" in out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["1"], ["2"], ["3"])]
    reference.load_state_dict(
        {k: v.double() if v.is_floating_point() else v for k, v in untrained.state_dict().items()}
    )
    assert [float(row[1]) for row in rows] == pytest.approx(_stage_errors_by_hand(reference, *train), abs=0.006)
    save_file({"fc.0.weight": torch.zeros(1)}, str(run / "wrong.safetensors"))
    monkeypatch.setattr(
        sys, "argv", ["generalization_gap.py", "--run", str(run), "--weights", str(run / "wrong.safetensors")]
    )
    with pytest.raises(SystemExit, match="do not fit this NestedResNet"):
        _example().main()


def test_a_folder_that_is_not_a_run_is_refused_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["generalization_gap.py", "--run", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"not a run folder.*--output of anytime-train"):
        _example().main()
    monkeypatch.setattr(sys, "argv", ["generalization_gap.py", "--weights", str(tmp_path / "model.safetensors")])
    with pytest.raises(SystemExit):  # argparse: "--weights names a file of a run's model: give the run with --run"
        _example().main()
