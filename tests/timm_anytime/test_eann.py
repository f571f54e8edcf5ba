"""The EANN cascade against a reference written from SPEC section 6 and against the plain network."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import timm
import torch
from torch.nn import functional as F

import timm_anytime  # noqa: F401
from tests.timm_anytime.batchnorm import nontrivial_batchnorm
from timm_anytime.cost import stage_costs
from timm_anytime.models import EANNSparseResNet, SparseResNet


def _model(units: int = 4) -> EANNSparseResNet:
    torch.manual_seed(0)
    model = EANNSparseResNet(units_per_stage=units, channels=(4, 8, 8), num_classes=5)
    return nontrivial_batchnorm(model, bias=False)


def reference_exits(model: EANNSparseResNet, x: torch.Tensor) -> list[torch.Tensor]:
    """Exits after units k * 2^i of T = 3N, k = T / 8: the aggregate that would feed the next unit."""
    n = model.units_per_stage
    total = 3 * n
    exits = [total // 8 * 2**i for i in range(4)]
    logits, h, unit = [], model.conv1(x), 0
    for r in range(3):
        stage = getattr(model, f"stage{r + 1}")
        if r > 0:
            h = getattr(model, f"transition{r}")(h)
        positions = [h]  # position 0: the stage input

        def aggregate(position: int, positions: list = positions) -> torch.Tensor:
            return sum(positions[position - 2**j] for j in range(position.bit_length() + 1) if position - 2**j >= 0)

        for l in range(1, n + 1):  # noqa: E741 (the SPEC's name)
            positions.append(stage.units[l - 1](aggregate(l)))
            unit += 1
            if unit in exits:
                e = exits.index(unit)
                features = F.relu(model.norms[e](aggregate(l + 1)))
                logits.append(model.fc[e](features.mean(dim=(2, 3))))
        h = aggregate(n + 1)
    return logits


def test_every_path_matches_the_reference() -> None:
    model = _model(8)  # 24 units: exits after 3, 6, 12, 24
    assert model.exits == [3, 6, 12, 24]
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = reference_exits(model, x)
        stages, anytime = model.forward_stages(x), list(model.forward_anytime(x))
        for k in range(4):
            torch.testing.assert_close(stages[k], expected[k], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(anytime[k], expected[k], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(model.set_active_stage(k + 1)(x), expected[k], rtol=1e-5, atol=1e-5)
    assert len({round(float(s.sum()), 4) for s in stages}) == 4


def test_the_last_exit_is_the_plain_sparse_resnet() -> None:
    model = _model(8)
    plain = SparseResNet(units_per_stage=8, channels=(4, 8, 8), num_classes=5).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(("norms", "fc"))}
    state.update({k.replace("norms.3", "norm").replace("fc.3", "fc"): v for k, v in model.state_dict().items()
                  if k.startswith(("norms.3", "fc.3"))})  # fmt: skip
    plain.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_stages(x)[-1], plain(x), rtol=1e-5, atol=1e-5)


def test_an_exit_never_sees_what_comes_after_it() -> None:
    model = _model(8)
    x = torch.randn(2, 3, 16, 16)
    owners = model.element_stages()
    heads = {id(p): s for s in range(1, 5) for p in model.head_parameters(s)}
    with torch.no_grad():
        before = model.forward_stages(x)
        for param in model.parameters():
            if (heads.get(id(param)) or int(owners[param].flatten()[0])) > 2:
                param.add_(torch.randn_like(param))
        after = model.forward_stages(x)
    torch.testing.assert_close(after[0], before[0], rtol=0, atol=0)
    torch.testing.assert_close(after[1], before[1], rtol=0, atol=0)
    assert not torch.allclose(after[2], before[2])


def test_exits_cost_one_two_four_eight() -> None:
    costs = stage_costs(timm.create_model("eann_cifar_sparse_resnet98"))
    ratios = [b.flops / a.flops for a, b in itertools.pairwise(costs)]
    assert all(1.9 < r < 2.1 for r in ratios), ratios
    with pytest.raises(NotImplementedError, match="set_active_stage"):
        timm.create_model("eann_cifar_sparse_resnet50").extract_stage(2)
    with pytest.raises(ValueError, match="divisible"):
        EANNSparseResNet(units_per_stage=4, num_exits=4)  # 12 units cannot be split 1:2:4:8


def test_the_trainer_trains_the_cascade_with_adaloss(tmp_path: Path) -> None:
    from tests.timm_anytime.runs import tiny_config, weights
    from timm_anytime.train import train

    cfg = tiny_config(tmp_path / "eann", method="adaloss", model="eann_cifar_sparse_resnet50", epochs=1)
    cfg.model_kwargs = {"width": 0.5}
    run = train(cfg)
    state = (run / "checkpoint" / "state.json").read_text()
    assert "averages" in state  # AdaLoss's running averages are checkpointed
    torch.manual_seed(0)
    initial = timm.create_model(cfg.model, num_classes=10, in_chans=1, width=0.5).state_dict()
    final = weights(run)
    assert all(not torch.equal(final[f"fc.{k}.weight"], initial[f"fc.{k}.weight"]) for k in range(4))
