"""Plain Sparse ResNets: the aggregation against an explicit reference, names, cost growth."""

from __future__ import annotations

import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import timm_anytime  # noqa: F401
from timm_anytime.layers.sparse_blocks import SparseStage, SparseUnit


def reference_stage(stage: SparseStage, x: torch.Tensor) -> torch.Tensor:
    """SPEC section 4, written out: unit l sums the outputs at l - 1, l - 2, l - 4, ... (0 = input)."""
    outputs = {0: x}
    n = len(stage.units)
    for position in range(1, n + 2):
        aggregate = sum(outputs[position - 2**k] for k in range(position.bit_length()) if position - 2**k >= 0)
        if position == n + 1:
            return aggregate
        outputs[position] = stage.units[position - 1](aggregate)
    raise AssertionError


@pytest.mark.parametrize("units", [1, 2, 5, 16])
def test_stage_aggregation_matches_the_explicit_rule(units: int) -> None:
    torch.manual_seed(0)
    stage = SparseStage(4, units).eval()
    for module in stage.modules():  # non-trivial BN statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(stage(x), reference_stage(stage, x))


def test_registered_sparse_resnets_have_the_named_depth() -> None:
    for name, units, stages in (("cifar_sparse_resnet98", 16, 3), ("sparse_resnet66", 8, 4)):
        model = timm.create_model(name)
        units_found = [m for m in model.modules() if isinstance(m, SparseUnit)]
        convs = [c for u in units_found for c in u.modules() if isinstance(c, torch.nn.Conv2d)]
        assert len(convs) == 2 * units * stages  # 2 per unit; + stem and classifier = the name
        assert int(name.rsplit("resnet", 1)[1]) == 2 * units * stages + 2
    assert timm.create_model("cifar_sparse_resnet26", width=2).num_features == 128


def test_halving_depth_roughly_halves_the_flops() -> None:
    flops = []
    for name in ("cifar_sparse_resnet26", "cifar_sparse_resnet50", "cifar_sparse_resnet98"):
        model = timm.create_model(name).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.randn(1, 3, 32, 32))
        flops.append(counter.get_total_flops())
    assert 1.8 < flops[1] / flops[0] < 2.0
    assert 1.9 < flops[2] / flops[1] < 2.0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown stem"):
        timm.create_model("cifar_sparse_resnet26", stem="tiny")
    with pytest.raises(ValueError, match="no channels"):
        timm.create_model("cifar_sparse_resnet26", width=0.01)
