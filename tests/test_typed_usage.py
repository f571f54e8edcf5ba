"""Users' code as a type checker reads it: `make lint` runs mypy over this file too (the root
pyproject's [tool.mypy] files), so an annotation that rejects ordinary use fails the lint, and
pytest runs it, so the code is real."""

from __future__ import annotations

import timm
import torch
from torch import Tensor, nn

import osgd
import timm_anytime  # noqa: F401 (registers the models)
from timm_anytime.inference import EarlyExit
from timm_anytime.models.anytime import is_anytime_model


def _all_reached(*modules: nn.Module) -> osgd.ParamMasks:
    return {p: torch.ones_like(p, dtype=torch.bool) for m in modules for p in m.parameters()}


def test_osgd_takes_masks_keyed_by_parameters() -> None:
    """The dict[nn.Parameter, Tensor] that model code builds is accepted as reach masks (Mapping is
    invariant in its key, so an annotation of Mapping[Tensor, Tensor] alone would reject it)."""
    trunk, head_a, head_b = nn.Linear(4, 4), nn.Linear(4, 1), nn.Linear(4, 1)
    params = [*trunk.parameters(), *head_a.parameters(), *head_b.parameters()]
    first: dict[nn.Parameter, Tensor] = {p: torch.ones_like(p, dtype=torch.bool) for p in trunk.parameters()}
    second = _all_reached(trunk, head_b)
    optimizer = osgd.OSGD(torch.optim.SGD(params, lr=0.1), "norm", reach_masks=[first, second])
    x = torch.randn(8, 4)
    features = trunk(x)
    info = optimizer.backward([head_a(features).square().mean(), head_b(features).square().mean()])
    optimizer.step()
    assert info is not None  # None only with combine=False
    assert [float(d) for d in info.task_dims] == [20 + 5, 20 + 5]  # by hand: the trunk and one head each


def test_the_anytime_members_after_the_type_guard() -> None:
    """``timm.create_model`` returns an ``nn.Module``; ``is_anytime_model`` narrows it, so the
    anytime members (and ``send`` on ``forward_anytime``'s generator) type-check."""
    model = timm.create_model("anytime_cifar_resnet20_w124", num_classes=10).eval()
    assert is_anytime_model(model)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        run = model.forward_anytime(x)
        first = next(run)
        kept = run.send(torch.tensor([0, 2]))
        model.set_active_stage(1)
        alone = model(x)
    assert model.active_stage == 1
    assert first.shape == (4, 10)
    assert kept.shape == (2, 10)
    torch.testing.assert_close(alone, first)
    exits = EarlyExit(model, [float("inf")] * (model.num_stages - 1), [1.0] * model.num_stages)
    logits, stages = exits(x)
    assert logits.shape == (4, 10)
    assert stages.tolist() == [model.num_stages] * 4
