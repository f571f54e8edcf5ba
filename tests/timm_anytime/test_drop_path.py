"""Stochastic depth (``drop_path_rate``) in the residual families, checked against timm's own ResNet
(the per-block rates), closed forms (a dropped branch leaves ``act(shortcut)``, a kept one is
scaled by 1 / keep), and the same weights without it (evaluation is unchanged)."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from timm.layers import DropPath
from torch import nn

from tests.timm_anytime.runs import tiny_config
from timm_anytime.layers.stochastic_depth import block_drop_paths
from timm_anytime.train import train

RESIDUAL = ["anytime_cifar_resnet20_w124", "anytime_cifar_resnet20_e1234", "cifar_resnet20", "anytime_resnet50_w124"]


def _rates(model: nn.Module) -> list[float]:
    """The drop probability of every residual block, in order (0 where it has none)."""
    blocks = [m for m in model.modules() if hasattr(m, "drop_path")]
    return [b.drop_path.drop_prob if isinstance(b.drop_path, DropPath) else 0.0 for b in blocks]


def _size(name: str) -> int:
    return 32 if "cifar" in name else 64


def test_the_rates_rise_linearly_over_the_blocks_as_in_timms_resnet() -> None:
    # ImageNet layout: timm's resnet50 is the reference (make_blocks' rule over the 16 blocks)
    reference = _rates(timm.create_model("resnet50", drop_path_rate=0.2))
    assert len(reference) == 16
    assert reference[-1] == pytest.approx(0.2)
    assert _rates(timm.create_model("anytime_resnet50_w124", drop_path_rate=0.2)) == pytest.approx(reference)
    # CIFAR ResNet-20: 9 blocks, rate * i / 8
    expected = [0.2 * i / 8 for i in range(9)]
    for name in ("cifar_resnet20", "anytime_cifar_resnet20_w124"):
        assert _rates(timm.create_model(name, drop_path_rate=0.2)) == pytest.approx(expected), name
    assert _rates(timm.create_model("cifar_resnet20")) == [0.0] * 9  # off by default
    with pytest.raises(ValueError, match=r"drop_path_rate is a probability in \[0, 1\]"):
        block_drop_paths(1.5, 9)


@pytest.mark.parametrize("name", RESIDUAL)
def test_evaluation_is_the_same_network_without_stochastic_depth(name: str) -> None:
    torch.manual_seed(0)
    dropping = timm.create_model(name, drop_path_rate=0.5).eval()
    plain = timm.create_model(name).eval()
    plain.load_state_dict(dropping.state_dict(), strict=True)  # no new parameters or buffers
    x = torch.randn(2, 3, _size(name), _size(name))
    with torch.no_grad():
        torch.testing.assert_close(dropping(x), plain(x), rtol=0, atol=0)
        if hasattr(dropping, "forward_anytime"):
            for a, b in zip(dropping.forward_anytime(x), plain.forward_anytime(x), strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", RESIDUAL)
def test_in_training_each_image_keeps_or_drops_each_branch_whole(name: str) -> None:
    """With drop_path_rate 1, the last block always drops (output act(shortcut)); a block at rate p
    gives each image either act(shortcut) or act(branch / (1 - p) + shortcut), computed here from the
    block's own layers with the drop path removed."""
    torch.manual_seed(0)
    model = timm.create_model(name, drop_path_rate=1.0).train()
    with torch.no_grad():  # timm's zero_init_last would make every branch 0 (dropped and kept alike)
        for param_name, param in model.named_parameters():
            if param_name.endswith(("bn2.weight", "bn3.weight")):
                param.uniform_(0.5, 1.5)
    blocks = [m for m in model.modules() if isinstance(getattr(m, "drop_path", None), DropPath)]
    for block, rate in ((blocks[-1], 1.0), (blocks[len(blocks) // 2], blocks[len(blocks) // 2].drop_path.drop_prob)):
        inplanes = block.conv1.in_channels
        x = torch.randn(16, inplanes, 8, 8)
        drop_path, block.drop_path = block.drop_path, None
        with torch.no_grad():
            torch.manual_seed(1)
            whole = block(x.clone())  # act(branch + shortcut), BatchNorm on this batch's statistics
            # the branch alone: the same block with its shortcut's contribution removed, from the same batch
            shortcut = block._shortcut(x) if hasattr(block, "_shortcut") else _cifar_shortcut(block, x)
            branch = _branch(block, x)
            block.drop_path = drop_path
            torch.manual_seed(2)
            out = block(x.clone())
        act = torch.relu
        dropped = act(shortcut)
        kept = act(branch / (1 - rate) + shortcut) if rate < 1 else None
        torch.testing.assert_close(act(branch + shortcut), whole, rtol=1e-5, atol=1e-5)
        for i in range(len(x)):
            if rate == 1.0 or torch.allclose(out[i], dropped[i], atol=1e-6):
                torch.testing.assert_close(out[i], dropped[i], rtol=1e-5, atol=1e-6)
            else:
                torch.testing.assert_close(out[i], kept[i], rtol=1e-5, atol=1e-5)
        if rate < 1:  # both outcomes among 16 images (seeded; either alone has probability < 1e-3)
            n_dropped = sum(torch.allclose(out[i], dropped[i], atol=1e-6) for i in range(len(x)))
            assert 0 < n_dropped < len(x)


def _cifar_shortcut(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if block.stride != 1 or block.pad != 0:
        return nn.functional.pad(x[:, :, :: block.stride, :: block.stride], (0, 0, 0, 0, 0, block.pad))
    return x


def _branch(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The residual branch before the drop path and the addition: conv-BN-ReLU-...-conv-BN."""
    h = block.act1(block.bn1(block.conv1(x)))
    if hasattr(block, "conv3"):  # bottleneck
        h = block.act2(block.bn2(block.conv2(h)))
        return block.bn3(block.conv3(h))
    return block.bn2(block.conv2(h))


def test_the_extracted_stage_keeps_the_rates_and_forward_anytime_refuses_training_mode() -> None:
    model = timm.create_model("anytime_cifar_resnet20_w124", drop_path_rate=0.3)
    for stage in (1, 3):
        assert _rates(model.extract_stage(stage)) == pytest.approx(_rates(model))
    big = timm.create_model("anytime_resnet18_w124", drop_path_rate=0.3)
    assert _rates(big.extract_stage(2)) == pytest.approx(_rates(timm.create_model("resnet18", drop_path_rate=0.3)))
    model.train()
    with pytest.raises(RuntimeError, match=r"call model.eval\(\) first"):
        next(model.forward_anytime(torch.randn(1, 3, 32, 32)))
    model.eval()
    assert len(list(model.forward_anytime(torch.randn(1, 3, 32, 32)))) == 3


def test_the_trainer_trains_with_stochastic_depth(tmp_path: Path) -> None:
    """Through --model-kwargs, with osgd's separate stage passes (each draws its own masks)."""
    settings = dict(method="osgd", epochs=1, model_kwargs={"width": 0.5, "drop_path_rate": 0.2})
    run = train(tiny_config(tmp_path / "dp", **settings))
    assert (run / "model.safetensors").is_file()
