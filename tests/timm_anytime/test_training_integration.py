"""The pieces together: in-memory CIFAR batches, a width-nested model, OSGD over its stages."""

from __future__ import annotations

import pytest
import timm
import torch
from torch.nn import functional as F

import timm_anytime  # noqa: F401
from osgd import OSGD
from tests.shared_data import CIFAR10, needs_cifar10
from timm_anytime.data import InMemoryLoader, load_image_folder


@pytest.mark.slow
@needs_cifar10
@pytest.mark.parametrize("method", ["osgd", "norm"])
def test_every_stage_learns_with_osgd_on_real_images(method: str) -> None:
    torch.manual_seed(0)
    data = load_image_folder(CIFAR10 / "train", max_per_class=20, progress=False)  # 200 images
    model = timm.create_model("anytime_cifar_resnet20_w124")
    cfg = model.pretrained_cfg
    loader = InMemoryLoader(data, 50, train=True, mean=cfg["mean"], std=cfg["std"], seed=0)
    opt = OSGD(
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        method=method,
        reach_masks=model.osgd_reach_masks(),
        norm_scale=0.005,  # C calibrated for this short run, as the paper calibrates C
    )

    def stage_losses() -> list[float]:
        # The fit to the 200 images, with BatchNorm on batch statistics: after 32 steps the running
        # statistics still lag the weights, so eval mode would measure them rather than learning.
        model.train()
        with torch.no_grad():
            x, y = data.images.float() / 255, data.labels
            x = (x - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
            return [F.cross_entropy(z, y).item() for z in model.forward_stages(x)]

    model.train()
    for epoch in range(8):
        loader.set_epoch(epoch)
        for x, y in loader:
            opt.zero_grad()
            opt.backward([F.cross_entropy(z, y) for z in model.forward_stages(x)])
            opt.step()
    before = [2.302585] * 3  # chance level for 10 classes
    after = stage_losses()
    assert all(a < b - 0.25 for a, b in zip(after, before, strict=True)), after
    for module in model.modules():  # the nesting survives training
        if hasattr(module, "weight_mask"):
            assert torch.count_nonzero(module.weight * (1 - module.weight_mask)) == 0
