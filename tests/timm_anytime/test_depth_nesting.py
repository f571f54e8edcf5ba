"""Depth-nested Sparse ResNets against an independent reference written from SPEC section 4."""

from __future__ import annotations

import itertools

import pytest
import timm
import torch
from torch.nn import functional as F

import timm_anytime  # noqa: F401
from tests.timm_anytime.batchnorm import nontrivial_batchnorm
from timm_anytime.cost import stage_costs
from timm_anytime.models import DepthNestedSparseResNet, SparseResNet

SMALL = dict(channels=(4, 8, 8), num_classes=5)


def _model(units: int = 8, levels: int = 3, **kwargs) -> DepthNestedSparseResNet:
    torch.manual_seed(0)
    model = DepthNestedSparseResNet(units_per_stage=units, levels=levels, **{**SMALL, **kwargs})
    # Non-trivial BatchNorm statistics, so that eval mode is not the identity.
    return nontrivial_batchnorm(model)


def _level(p: int, levels: int) -> int:
    """SPEC 4 by brute force: the smallest s whose subnetwork holds unit p (every 2^(L-s)-th unit)."""
    return next(s for s in range(1, levels + 1) if (p - 1) % 2 ** (levels - s) == 0)


def reference_logits(model: DepthNestedSparseResNet, x: torch.Tensor, k: int) -> torch.Tensor:
    """D_k computed from the SPEC's words, with the model's layers used as plain functions."""
    n, levels = model.units_per_stage, model.levels
    h = model.conv1(x)
    stage_inputs = {s: h for s in range(1, k + 1)}
    outputs: dict[int, torch.Tensor] = {}
    for r in range(model.num_resolution_stages):
        stage = getattr(model, f"stage{r + 1}")
        if r > 0:
            transitions = getattr(model, f"transition{r}").levels
            stage_inputs = {s: transitions[s - 1](outputs[s]) for s in range(1, k + 1)}
        unit_out: dict[int, torch.Tensor] = {}
        for s in range(1, k + 1):
            sequence = [p for p in range(1, n + 1) if _level(p, levels) <= s]  # D_s's units, in order
            position = {0: stage_inputs[s], **{c: None for c in range(1, len(sequence) + 1)}}
            for c, p in enumerate(sequence, start=1):
                if _level(p, levels) == s:  # this level's unit: aggregate inside D_s's sequence
                    reads = [c - 2**j for j in range(c.bit_length() + 1) if c - 2**j >= 0]
                    total = sum(position[q] if q == 0 else unit_out[sequence[q - 1]] for q in reads)
                    unit_out[p] = stage.units[p - 1](total)
            end = len(sequence) + 1
            reads = [end - 2**j for j in range(end.bit_length() + 1) if end - 2**j >= 0]
            outputs[s] = sum(position[q] if q == 0 else unit_out[sequence[q - 1]] for q in reads)
    features = F.relu(model.norms[k - 1](outputs[k]))
    return model.fc[k - 1](features.mean(dim=(2, 3)))


@pytest.mark.parametrize(("units", "levels"), [(4, 3), (8, 3), (8, 4), (4, 1)])
def test_every_path_matches_the_reference(units: int, levels: int) -> None:
    model = _model(units, levels)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        stages = model.forward_stages(x)
        anytime = list(model.forward_anytime(x))
        for k in range(1, levels + 1):
            expected = reference_logits(model, x, k)
            torch.testing.assert_close(stages[k - 1], expected, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(anytime[k - 1], expected, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(model.set_active_stage(k)(x), expected, rtol=1e-5, atol=1e-5)
            extracted = model.extract_stage(k).eval()
            torch.testing.assert_close(extracted(x), expected, rtol=1e-5, atol=1e-5)
        model.set_active_stage(levels)
    assert len({round(float(s.sum()), 4) for s in stages}) == levels  # the stages really differ


def test_extracted_stages_are_smaller_standalone_networks() -> None:
    model = _model(8, 3)
    first, second = model.extract_stage(1), model.extract_stage(2)
    assert type(first) is SparseResNet
    assert len(first.stage1.units) == 2
    assert isinstance(second, DepthNestedSparseResNet)
    assert (second.units_per_stage, second.levels) == (4, 2)
    sizes = model.subnetwork_sizes()
    assert sum(p.numel() for p in first.parameters()) == sizes[0]
    head_1 = sum(p.numel() for p in model.head_parameters(1))
    assert sum(p.numel() for p in second.parameters()) == sizes[1] + head_1  # D_2, and head 1 as its stage 1
    with torch.no_grad():
        first.conv1.weight.add_(1.0)
    assert not torch.equal(first.conv1.weight, model.conv1.weight)  # no shared tensors


@pytest.mark.parametrize("stage", [1, 2])
def test_later_stages_never_reach_an_earlier_output(stage: int) -> None:
    model = _model(8, 3)
    x = torch.randn(2, 3, 16, 16)
    owners = model.element_stages()
    heads = {id(p): s for s in (1, 2, 3) for p in model.head_parameters(s)}
    with torch.no_grad():
        before = model.forward_stages(x)
        for param in model.parameters():  # perturb everything introduced after `stage`
            owner = heads.get(id(param)) or int(owners[param].flatten()[0])
            if owner > stage:
                param.add_(torch.randn_like(param))
        after = model.forward_stages(x)
    for k in range(stage):
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0)
    assert not torch.allclose(after[stage], before[stage])


def test_a_stage_loss_has_no_gradient_on_later_parameters() -> None:
    model = _model(8, 3).train()
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 5, (4,))
    for k in (1, 2):
        model.zero_grad()
        F.cross_entropy(model.forward_stages(x)[k - 1], y).backward()
        later = {id(p) for s in range(k + 1, 4) for p in model.stage_parameters(s)}
        for param in model.parameters():
            if id(param) in later:
                assert param.grad is None or not param.grad.any()
        assert all(p.grad is not None and p.grad.any() for p in model.stage_parameters(k) if p.dim() > 1)


def test_doubling_the_depth_roughly_doubles_the_cost() -> None:
    model = timm.create_model("anytime_cifar_sparse_resnet98_d1248")
    costs = stage_costs(model)
    ratios = [b.flops / a.flops for a, b in itertools.pairwise(costs)]
    assert all(1.7 < r < 2.05 for r in ratios), ratios
    params = [c.params for c in costs]
    assert params == sorted(params)


def test_registered_names_and_bad_arguments() -> None:
    model = timm.create_model("anytime_cifar_sparse_resnet50_d124")
    assert (model.units_per_stage, model.num_stages) == (8, 3)
    assert [stage.level_of for stage in (model.stage1,)] == [[1, 3, 2, 3, 1, 3, 2, 3]]
    deeper = timm.create_model("anytime_cifar_sparse_resnet50_d124", levels=4)
    assert deeper.num_stages == 4
    with pytest.raises(ValueError, match="multiple of 2"):
        timm.create_model("anytime_cifar_sparse_resnet50_d124", levels=5)


@pytest.mark.parametrize("method", ["osgd", "greedy"])
def test_the_trainer_trains_a_depth_nested_network(tmp_path, method: str) -> None:
    from tests.timm_anytime.runs import tiny_config, weights
    from timm_anytime.train import train

    cfg = tiny_config(
        tmp_path / method,
        method=method,
        model="anytime_cifar_sparse_resnet26_d124",
        model_kwargs={"width": 0.5},
        epochs=3,
    )
    run = train(cfg)
    torch.manual_seed(0)
    initial = timm.create_model(cfg.model, num_classes=10, in_chans=1, width=0.5).state_dict()
    final = weights(run)
    for k in range(3):  # every stage's head trained
        assert not torch.equal(final[f"fc.{k}.weight"], initial[f"fc.{k}.weight"])


def test_a_greedy_step_changes_only_its_level() -> None:
    from accelerate import Accelerator

    from timm_anytime.train.methods import Greedy

    model = _model(8, 3).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rule = Greedy(Accelerator(), model, stage=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    model.set_active_stage(2)
    for _ in range(2):
        opt.zero_grad()
        x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 5, (4,))
        rule.backward([F.cross_entropy(model(x), y)], last_micro=True)
        opt.step()
        rule.after_step()
    after = model.state_dict()
    levels = model.stage1.level_of  # [1, 3, 2, 3, 1, 3, 2, 3]
    for index, level in enumerate(levels):
        for name in ("conv1.weight", "bn1.weight", "bn1.running_mean"):
            key = f"stage1.units.{index}.{name}"
            assert torch.equal(after[key], before[key]) == (level != 2), key
    assert torch.equal(after["conv1.weight"], before["conv1.weight"])  # the stem is stage 1's
    assert not torch.equal(after["transition1.levels.1.conv.weight"], before["transition1.levels.1.conv.weight"])
    assert torch.equal(after["transition1.levels.0.conv.weight"], before["transition1.levels.0.conv.weight"])
    assert torch.equal(after["norms.0.running_mean"], before["norms.0.running_mean"])


@pytest.mark.parametrize("name", ["anytime_cifar_sparse_resnet26_d124", "eann_cifar_sparse_resnet50"])
def test_every_parameter_gets_a_gradient(name: str) -> None:
    """Replaces timm's test_model_backward (see tests/timm_suite/run.py): model(x) is D_S alone, so
    the earlier heads get gradients only from their own stage's loss."""
    model = timm.create_model(name, width=0.5).train()
    x = torch.randn(2, 3, 32, 32)
    sum(logits.mean() for logits in model.forward_stages(x)).backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]
    model.zero_grad()
    model(x).mean().backward()
    heads = {id(p) for k in range(1, model.num_stages) for p in model.head_parameters(k)}
    assert all((p.grad is None) == (id(p) in heads) for p in model.parameters())
