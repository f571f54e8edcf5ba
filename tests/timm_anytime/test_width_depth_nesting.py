"""Width-depth-nested Sparse ResNets against an independent reference written from SPEC sections 3-5."""

from __future__ import annotations

import itertools

import pytest
import timm
import torch
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import timm_anytime
from tests.timm_anytime.batchnorm import nontrivial_batchnorm
from timm_anytime.cost import stage_costs
from timm_anytime.models import DepthNestedSparseResNet, SparseResNet, WidthDepthNestedSparseResNet
from timm_anytime.width_depth import WidthDepthSchedule

SMALL = dict(channels=(4, 8, 8), num_classes=5)
ALT = ("w1d1,w2d1,w2d2,w4d2,w4d4", [(1, 1), (2, 1), (2, 2), (4, 2), (4, 4)])
SIM = ("w1d1,w2d2,w4d4", [(1, 1), (2, 2), (4, 4)])
NARROW = ("w1d1,w1d2,w2d2,w2d4", [(1, 1), (1, 2), (2, 2), (2, 4)])  # two stripes, three depth levels


def _model(schedule: str, units: int = 4, **kwargs) -> WidthDepthNestedSparseResNet:
    torch.manual_seed(0)
    model = WidthDepthNestedSparseResNet(units_per_stage=units, schedule=schedule, **{**SMALL, **kwargs})
    return nontrivial_batchnorm(model)


# ---------------------------------------------------------------------- the reference, from the SPEC
def _stripes(factors: list[tuple[int, int]]) -> list[int]:
    """Power-of-two width nesting: stripes 1, 1, 2, 4, ... up to the largest width factor."""
    levels = max(w for w, _ in factors).bit_length()
    return [1] + [2 ** (i - 1) for i in range(1, levels)]


def _prefix(channels: int, stripes: list[int], width_factor: int) -> int:
    """Channels of a layer at width factor w: the stripes whose levels are <= log2(w) + 1."""
    return channels * sum(stripes[: width_factor.bit_length()]) // sum(stripes)


def _triangular(c_out: int, c_in: int, stripes: list[int], width_factor: int) -> torch.Tensor:
    """Output stripe j reads input stripes <= j (SPEC 3)."""
    mask = torch.zeros(_prefix(c_out, stripes, width_factor), _prefix(c_in, stripes, width_factor), 1, 1)
    for j in range(1, width_factor.bit_length() + 1):
        lo, hi = _prefix(c_out, stripes, 2 ** (j - 2)) if j > 1 else 0, _prefix(c_out, stripes, 2 ** (j - 1))
        mask[lo:hi, : _prefix(c_in, stripes, 2 ** (j - 1))] = 1
    return mask


def _level(p: int, levels: int) -> int:
    """SPEC 4 by brute force: the smallest level whose subnetwork holds unit p."""
    return next(s for s in range(1, levels + 1) if (p - 1) % 2 ** (levels - s) == 0)


def reference_logits(model, x: torch.Tensor, factors: list[tuple[int, int]], stage: int) -> torch.Tensor:
    """D_stage from the SPEC's words: the model's tensors used through plain functional ops."""
    stripes = _stripes(factors)
    w_factor, d_factor = factors[stage - 1]
    depth = d_factor.bit_length()
    levels = max(d for _, d in factors).bit_length()

    def conv(h, layer, padding, striped_in=True):
        c_out, c_in = layer.weight.shape[:2]
        out = _prefix(c_out, stripes, w_factor)
        if striped_in:
            mask = _triangular(c_out, c_in, stripes, w_factor)
            weight = layer.weight[:out, : _prefix(c_in, stripes, w_factor)] * mask
        else:
            weight = layer.weight[:out]
        return F.conv2d(h, weight, padding=padding)

    def bn(h, layer):
        c = h.shape[1]
        return F.batch_norm(
            h, layer.running_mean[:c], layer.running_var[:c], layer.weight[:c], layer.bias[:c], False, 0.0, layer.eps
        )

    def unit(h, u):
        h = conv(F.relu(bn(h, u.bn1)), u.conv1, 1)
        return conv(F.relu(bn(h, u.bn2)), u.conv2, 1)

    def transition(h, t):
        return F.avg_pool2d(conv(F.relu(bn(h, t.norm)), t.conv, 0), 2)

    n = model.units_per_stage
    h = conv(x, model.conv1, 1, striped_in=False)
    stage_inputs = {s: h for s in range(1, depth + 1)}
    outputs: dict[int, torch.Tensor] = {}
    for r in range(3):
        stage_module = getattr(model, f"stage{r + 1}")
        if r > 0:
            transitions = getattr(model, f"transition{r}").levels
            stage_inputs = {s: transition(outputs[s], transitions[s - 1]) for s in range(1, depth + 1)}
        unit_out: dict[int, torch.Tensor] = {}
        for s in range(1, depth + 1):
            sequence = [p for p in range(1, n + 1) if _level(p, levels) <= s]
            for c, p in enumerate(sequence, start=1):
                if _level(p, levels) == s:
                    reads = [c - 2**j for j in range(c.bit_length() + 1) if c - 2**j >= 0]
                    total = sum(stage_inputs[s] if q == 0 else unit_out[sequence[q - 1]] for q in reads)
                    unit_out[p] = unit(total, stage_module.units[p - 1])
            end = len(sequence) + 1
            reads = [end - 2**j for j in range(end.bit_length() + 1) if end - 2**j >= 0]
            outputs[s] = sum(stage_inputs[s] if q == 0 else unit_out[sequence[q - 1]] for q in reads)
    features = F.relu(bn(outputs[depth], model.norms[depth - 1]))
    return model.fc[stage - 1](features.mean(dim=(2, 3)))


# ---------------------------------------------------------------------- tests
def test_schedules_parse_and_assign_cells() -> None:
    alt = WidthDepthSchedule.parse(ALT[0])
    assert alt.stages == ((1, 1), (2, 1), (2, 2), (3, 2), (3, 3))
    assert alt.name == ALT[0]
    # Brute force: the first stage whose (width, depth) covers the cell.
    for level in (1, 2, 3):
        for stripe in (1, 2, 3):
            covering = [s for s, (w, d) in enumerate(ALT[1], 1) if w.bit_length() >= stripe and d.bit_length() >= level]
            first = covering[0]
            assert alt.body_owner(level, stripe) == first
    assert [alt.head_norm_owner(1, j) for j in (1, 2, 3)] == [1, 2, 0]  # no d1 stage is w4 wide
    assert [alt.head_norm_owner(3, j) for j in (1, 2, 3)] == [5, 5, 5]
    for bad, match in [
        ("w1d1,w3d2", "power of two"),
        ("w2d2,w1d4", "not nested"),
        ("w1d1,w1d1", "not nested"),
        ("w1-d1", "w<factor>d<factor>"),
    ]:
        with pytest.raises(ValueError, match=match):
            WidthDepthSchedule.parse(bad)


@pytest.mark.parametrize("fuse_stripes", [True, False])
@pytest.mark.parametrize(("schedule", "units"), [(ALT, 4), (SIM, 8), (NARROW, 4)])
def test_every_path_matches_the_reference(schedule, units: int, fuse_stripes: bool) -> None:
    name, factors = schedule
    model = _model(name, units)
    model.fuse_stripes = fuse_stripes
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        stages = model.forward_stages(x)
        anytime = list(model.forward_anytime(x))
        for k in range(1, model.num_stages + 1):
            expected = reference_logits(model, x, factors, k)
            torch.testing.assert_close(stages[k - 1], expected, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(anytime[k - 1], expected, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(model.set_active_stage(k)(x), expected, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(model.extract_stage(k).eval()(x), expected, rtol=1e-5, atol=1e-5)
        model.set_active_stage(model.num_stages)
    assert len({round(float(s.sum()), 4) for s in stages}) == model.num_stages  # the stages really differ


def test_training_mode_paths_agree() -> None:
    """With batch statistics, D_k alone and the full pass still agree (BN is per channel)."""
    model = _model(ALT[0]).train()
    x = torch.randn(4, 3, 16, 16)
    stages = model.forward_stages(x)
    for k in range(1, model.num_stages + 1):
        torch.testing.assert_close(model.set_active_stage(k)(x), stages[k - 1], rtol=1e-5, atol=1e-5)


def test_extracted_stages_are_plain_networks() -> None:
    model = _model(ALT[0], units=8)
    first, fourth = model.extract_stage(1), model.extract_stage(4)  # w1d1, w4d2
    assert type(first) is SparseResNet
    assert len(first.stage1.units) == 2
    assert first.stage3.units[0].conv1.weight.shape[0] == 2  # a quarter of 8 channels
    assert isinstance(fourth, DepthNestedSparseResNet)
    assert (fourth.units_per_stage, fourth.levels) == (4, 2)
    with torch.no_grad():
        first.conv1.weight.add_(1.0)
    assert not torch.equal(first.conv1.weight[:1], model.conv1.weight[:1])  # no shared tensors


def _perturb_later(model: WidthDepthNestedSparseResNet, stage: int) -> None:
    owners = model.element_stages()
    heads = {id(p): s for s in range(1, model.num_stages + 1) for p in model.head_parameters(s)}
    with torch.no_grad():
        for param in model.parameters():
            if id(param) in heads:
                if heads[id(param)] > stage:
                    param.add_(torch.randn_like(param))
            else:  # later stages' elements, and the never-read ones (structural zeros, unread BN stripes)
                later = (owners[param] > stage) | (owners[param] == 0)
                param.add_(torch.randn_like(param) * later)


@pytest.mark.parametrize("fuse_stripes", [True, False])
@pytest.mark.parametrize("schedule", [ALT[0], SIM[0]])
def test_later_stages_never_reach_an_earlier_output(schedule: str, fuse_stripes: bool) -> None:
    x = torch.randn(2, 3, 16, 16)
    for stage in range(1, WidthDepthSchedule.parse(schedule).num_stages):
        model = _model(schedule)
        model.fuse_stripes = fuse_stripes
        with torch.no_grad():
            before = model.forward_stages(x)
            _perturb_later(model, stage)
            after = model.forward_stages(x)
            anytime = list(model.forward_anytime(x))
        for k in range(stage):
            torch.testing.assert_close(after[k], before[k], rtol=0, atol=0)
            torch.testing.assert_close(anytime[k], before[k], rtol=1e-6, atol=1e-6)
        assert not torch.allclose(after[stage], before[stage])


def test_a_stage_loss_has_no_gradient_on_later_elements() -> None:
    model = _model(ALT[0]).train()
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 5, (4,))
    owners = model.element_stages()
    for k in range(1, model.num_stages + 1):
        model.zero_grad()
        F.cross_entropy(model.forward_stages(x)[k - 1], y).backward()
        for param, owner in owners.items():
            grad = torch.zeros_like(param) if param.grad is None else param.grad
            assert not grad[(owner > k) | (owner == 0)].any()
            if bool((owner == k).any()):  # what stage k introduces, it trains (BN: every element)
                assert grad[owner == k].any() if param.dim() > 1 else grad[owner == k].all()
        other_heads = [p for s in range(1, model.num_stages + 1) if s != k for p in model.fc[s - 1].parameters()]
        assert all(p.grad is None or not p.grad.any() for p in other_heads)


def test_the_cost_follows_the_schedule_exactly() -> None:
    """FLOPs of each D_k against a closed-form count of its convolutions and its Linear head."""
    model = timm.create_model("anytime_cifar_sparse_resnet98_wd_alt")
    stripes, channels, sizes = [1, 1, 2], (16, 32, 64), (32 * 32, 16 * 16, 8 * 8)

    def triangular_macs(c_in: int, c_out: int, width: int) -> int:  # sum_j |out stripe j| * |in stripes <= j|
        total, lo = 0, 0
        for j in range(1, width.bit_length() + 1):
            hi = _prefix(c_out, stripes, 2 ** (j - 1))
            total += (hi - lo) * _prefix(c_in, stripes, 2 ** (j - 1))
            lo = hi
        return total

    expected = []
    for width, depth in ALT[1]:
        units, levels = 16 // 2 ** (3 - depth.bit_length()), depth.bit_length()
        macs = 9 * 3 * _prefix(16, stripes, width) * sizes[0]  # stem, from the image
        for r in range(3):
            macs += units * 2 * 9 * triangular_macs(channels[r], channels[r], width) * sizes[r]
            if r > 0:  # each depth level's 1x1 transition, at the resolution before pooling
                macs += levels * triangular_macs(channels[r - 1], channels[r], width) * sizes[r - 1]
        macs += _prefix(64, stripes, width) * 10  # the head's Linear
        expected.append(2 * macs)
    measured = [c.flops for c in stage_costs(model)]
    assert measured == expected
    ratios = [b / a for a, b in itertools.pairwise(measured)]
    assert 2.8 < ratios[0] < 3.1
    assert 1.9 < ratios[1] < 2.05


class _CountConvolutions(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += func is torch.ops.aten.convolution.default
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("schedule", [ALT, SIM, NARROW])
def test_fused_stripes_take_one_convolution_per_layer_and_stage(schedule) -> None:
    """Counted by brute force from the schedule: stage k runs each layer of D_k that gains stripes
    (a new depth level's layers gain all of theirs) once when fused, once per new stripe when not."""
    name, factors = schedule
    units = 4
    model = _model(name, units)
    levels = max(d for _, d in factors).bit_length()
    level_of = [_level(p, levels) for p in range(1, units + 1)]
    expected = {True: [], False: []}
    stages = [(w.bit_length(), d.bit_length()) for w, d in factors]  # (stripes, depth levels)
    for (before_width, before_depth), (width, depth) in itertools.pairwise([(0, 0), *stages]):
        # the stripes a layer of depth level l gains at this stage, for l = 1..depth
        gains = {level: width - (before_width if level <= before_depth else 0) for level in range(1, depth + 1)}
        layers = [(gains[1], 1)]  # the stem (read by every level)
        layers += [(gains[level], 2 * 3) for level in level_of if level <= depth]  # 2 convolutions, 3 resolutions
        layers += [(gains[level], 2) for level in range(1, depth + 1)]  # each level's 2 transitions
        expected[True].append(sum(convs for gained, convs in layers if gained > 0))
        expected[False].append(sum(gained * convs for gained, convs in layers))
    x = torch.randn(1, 3, 16, 16)
    for fuse in (True, False):
        model.fuse_stripes = fuse
        counts = []
        with torch.no_grad(), _CountConvolutions() as counter:
            for _ in model.forward_anytime(x):
                counts.append(counter.calls)
        assert [b - a for a, b in zip([0, *counts], counts, strict=False)] == expected[fuse]
    assert sum(expected[True]) < sum(expected[False])


def test_stage_costs_count_the_nested_multiply_adds_and_keep_the_setting() -> None:
    model = _model(SIM[0], units=4)
    assert model.fuse_stripes
    counted = [c.anytime_flops for c in stage_costs(model, (3, 16, 16))]
    assert model.fuse_stripes  # restored
    model.fuse_stripes = False
    assert [c.anytime_flops for c in stage_costs(model, (3, 16, 16))] == counted
    model.fuse_stripes = True
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        list(model.forward_anytime(torch.randn(1, 3, 16, 16)))
    assert counter.get_total_flops() > counted[-1]  # fused: the structural zeros of new depth levels too


def test_registered_names_and_bad_arguments() -> None:
    alt = timm.create_model("anytime_cifar_sparse_resnet98_wd_alt")
    sim = timm.create_model("anytime_cifar_sparse_resnet98_wd_sim")
    assert (alt.num_stages, sim.num_stages, alt.units_per_stage) == (5, 3, 16)
    custom = timm.create_model("anytime_cifar_sparse_resnet50_wd_sim", schedule="w1d1,w2d1,w2d2")
    assert custom.num_stages == 3
    assert custom.schedule.name == "w1d1,w2d1,w2d2"
    assert timm.create_model("anytime_cifar_sparse_resnet50_wd_alt").units_per_stage == 8
    with pytest.raises(ValueError, match="multiple of 2"):
        timm.create_model("anytime_cifar_sparse_resnet50_wd_alt", schedule="w1d1,w2d16")
    with pytest.raises(ValueError, match="multiple of 4"):
        timm.create_model("anytime_cifar_sparse_resnet50_wd_alt", width=0.3)
    assert "anytime_cifar_sparse_resnet98_wd_alt" in timm_anytime.list_models(anytime_only=True)


def test_every_parameter_gets_a_gradient() -> None:
    """Replaces timm's test_model_backward (tests/timm_suite/run.py): model(x) is D_S alone."""
    model = timm.create_model("anytime_cifar_sparse_resnet50_wd_alt").train()
    x = torch.randn(2, 3, 32, 32)
    sum(logits.mean() for logits in model.forward_stages(x)).backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]
    model.zero_grad()
    model(x).mean().backward()
    unused = {n for n, p in model.named_parameters() if p.grad is None}
    # D_S (w4d4) reads neither the earlier heads nor the final BatchNorms of depth levels 1 and 2.
    assert unused == {f"fc.{k}.{t}" for k in range(4) for t in ("weight", "bias")} | {
        f"norms.{lv}.{t}" for lv in range(2) for t in ("weight", "bias")
    }


@pytest.mark.parametrize("method", ["osgd", "greedy"])
def test_the_trainer_trains_a_width_depth_nested_network(tmp_path, method: str) -> None:
    from tests.timm_anytime.runs import tiny_config, weights
    from timm_anytime.train import train

    cfg = tiny_config(
        tmp_path / method, method=method, model="anytime_cifar_sparse_resnet50_wd_sim", model_kwargs={}, epochs=3
    )
    run = train(cfg)
    torch.manual_seed(0)
    initial = timm.create_model(cfg.model, num_classes=10, in_chans=1).state_dict()
    final = weights(run)
    for k in range(3):  # every stage's head trained
        assert not torch.equal(final[f"fc.{k}.weight"], initial[f"fc.{k}.weight"])
    for key, value in final.items():  # the structural zeros stay zero
        if key.startswith("stage1.") and key.endswith("conv1.weight"):
            assert not value[:4, 4:].any()  # stripe 1 (4 of 16 channels) reads only stripe 1
