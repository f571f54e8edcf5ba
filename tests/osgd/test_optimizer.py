"""The OSGD optimizer wrapper: per-task gradients, the optimizer protocol, accumulation, AMP, errors."""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import timm.optim
import timm.scheduler
import torch
from torch import nn

from osgd import OSGD, NonFiniteGradientError
from tests.osgd.multihead import MultiHead, batch, make_model, reached_params
from tests.osgd.reference import flat_task_gradients, reference_norm, reference_normalize, reference_osgd


def reference_direction(model: MultiHead, x, y, method: str, priority=None) -> torch.Tensor:
    """The combined update as a flat float64 vector, from the dense float64 reference."""
    params = reached_params(model)
    J = flat_task_gradients(model.losses(x, y), params)
    if method == "osgd":
        return reference_osgd(J, priority)
    if method == "sum":
        return J.mean(0)
    if method == "norm":
        # Tensor-level reach: a task reaches every element of a tensor its loss touches.
        reach = torch.zeros_like(J, dtype=torch.bool)
        offset = 0
        for p in params:
            size = p.numel()
            touched = (J[:, offset : offset + size] != 0).any(1)
            reach[:, offset : offset + size] = touched[:, None]
            offset += size
        return reference_norm(J, reach)
    raise AssertionError(method)


def flat_grad(model: MultiHead) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1).double() for p in reached_params(model)])


@pytest.mark.parametrize(
    ("method", "priority"), [("sum", None), ("norm", None), ("osgd", None), ("osgd", [2, 0, 1]), ("osgd", [1, 2, 0])]
)
def test_backward_writes_the_reference_combination_into_grad(method: str, priority) -> None:
    model = make_model()
    x, y = batch()
    expected = reference_direction(model, x, y, method, priority)
    opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.1), method=method, priority=priority)
    info = opt.backward(model.losses(x, y))
    torch.testing.assert_close(flat_grad(model), expected, rtol=1e-5, atol=1e-6)
    assert model.unused.weight.grad is None  # no task reaches it: untouched, not zero
    assert info.num_tasks == 3


def test_task_dims_count_the_parameters_each_task_reaches() -> None:
    model = make_model()
    x, y = batch()
    opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.1))
    info = opt.backward(model.losses(x, y))
    trunk = sum(p.numel() for p in model.trunk.parameters())
    head = sum(p.numel() for p in model.heads[0].parameters())
    assert info.task_dims.tolist() == [trunk + head] * 3


def test_info_diagnostics_match_the_reference_gradients() -> None:
    model = make_model()
    x, y = batch()
    J = flat_task_gradients(model.losses(x, y), reached_params(model))
    info = OSGD(torch.optim.SGD(model.parameters(), lr=0.1)).backward(model.losses(x, y))
    torch.testing.assert_close(info.gram, J @ J.T, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(info.grad_norm, J.norm(dim=1), rtol=1e-5, atol=1e-8)
    cos01 = float(J[0] @ J[1] / (J[0].norm() * J[1].norm()))
    assert float(info.cosine[0, 1]) == pytest.approx(cos01, rel=1e-4)
    assert float(info.removed_fraction[0]) == 0.0
    u1 = J[1] - (J[1] @ J[0]) / (J[0] @ J[0]) * J[0]
    assert float(info.removed_fraction[1]) == pytest.approx(float(1 - u1.norm() / J[1].norm()), rel=1e-4)


OPTIMIZERS = {
    "sgd_momentum": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "adam": lambda params: torch.optim.Adam(params, lr=1e-2),
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1),
    "timm_lamb": lambda params: timm.optim.create_optimizer_v2(params, "lamb", lr=1e-2, weight_decay=0.01),
    "timm_adamp": lambda params: timm.optim.create_optimizer_v2(params, "adamp", lr=1e-2),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_family_steps_on_the_reference_direction(name: str) -> None:
    """OSGD(opt) == opt stepped on the reference OSGD direction, over several steps."""
    model, twin = make_model(), make_model()
    opt = OSGD(OPTIMIZERS[name](model.parameters()), method="osgd")
    plain = OPTIMIZERS[name](twin.parameters())
    before = copy.deepcopy(twin.unused.state_dict())
    for step in range(4):
        x, y = batch(step)
        opt.zero_grad()
        opt.backward(model.losses(x, y))
        opt.step()

        direction = reference_direction(twin, x, y, "osgd")
        plain.zero_grad()
        offset = 0
        for p in reached_params(twin):
            p.grad = direction[offset : offset + p.numel()].view_as(p).float()
            offset += p.numel()
        plain.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # Weight decay never touches parameters that no task reaches: their grad stays None.
    torch.testing.assert_close(twin.unused.state_dict(), before)
    torch.testing.assert_close(model.unused.weight, before["weight"])


@pytest.mark.parametrize("method", ["sum", "osgd"])
def test_single_task_is_the_wrapped_optimizer_itself(method: str) -> None:
    model, twin = make_model(), make_model()
    opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), method=method)
    plain = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9)
    for step in range(3):
        x, y = batch(step)
        opt.zero_grad()
        opt.backward([model.losses(x, y)[0]])
        opt.step()
        plain.zero_grad()
        twin.losses(x, y)[0].backward()
        plain.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def run_with_scheduler(opt, advance, model, steps) -> None:
    for step in steps:
        x, y = batch(step)
        opt.zero_grad()
        opt.backward(model.losses(x, y))
        opt.step()
        advance(step + 1)


def build_with_scheduler(model, kind: str):
    """OSGD(SGD) plus a step-decay schedule and a function that advances it after step i."""
    opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), method="osgd")
    if kind == "torch":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.2)
        return opt, sched, lambda _: sched.step()
    sched, _ = timm.scheduler.create_scheduler_v2(opt, "step", num_epochs=6, decay_epochs=2, decay_rate=0.2)
    return opt, sched, lambda epoch: sched.step(epoch)


@pytest.mark.parametrize("kind", ["torch", "timm"])
def test_scheduler_and_state_dict_round_trip_resumes_exactly(kind: str) -> None:
    straight = make_model()
    opt, sched, advance = build_with_scheduler(straight, kind)
    run_with_scheduler(opt, advance, straight, range(6))
    final_lr = opt.param_groups[0]["lr"]

    resumed = make_model()
    opt, sched, advance = build_with_scheduler(resumed, kind)
    run_with_scheduler(opt, advance, resumed, range(3))
    saved = (copy.deepcopy(resumed.state_dict()), copy.deepcopy(opt.state_dict()), sched.state_dict())
    fresh = make_model(seed=99)
    fresh.load_state_dict(saved[0])
    opt2, sched2, advance2 = build_with_scheduler(fresh, kind)
    opt2.load_state_dict(saved[1])
    sched2.load_state_dict(saved[2])
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    run_with_scheduler(opt2, advance2, fresh, range(3, 6))
    assert opt2.param_groups[0]["lr"] == pytest.approx(final_lr)
    assert final_lr < 0.1
    for a, b in zip(straight.parameters(), fresh.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert opt2.param_groups is opt2.optimizer.param_groups
    assert opt2.state is opt2.optimizer.state


def test_lr_scheduler_changes_the_wrapped_optimizers_learning_rate() -> None:
    model = make_model()
    inner = torch.optim.SGD(model.parameters(), lr=0.1)
    opt = OSGD(inner)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x, y = batch()
    opt.backward(model.losses(x, y))
    opt.step()
    sched.step()
    assert inner.param_groups[0]["lr"] == pytest.approx(0.05)


@pytest.mark.parametrize("method", ["sum", "norm", "osgd", "osgd_norm"])
def test_accumulation_equals_the_large_batch(method: str) -> None:
    model = make_model()
    x, y = batch(n=32)
    opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.1), method=method)
    opt.backward(model.losses(x, y))
    full = flat_grad(model)

    opt.zero_grad()
    for half, combine in ((slice(0, 16), False), (slice(16, 32), True)):
        opt.backward([loss / 2 for loss in model.losses(x[half], y[half])], combine=combine)
    torch.testing.assert_close(flat_grad(model), full, rtol=1e-5, atol=1e-7)

    opt.zero_grad()  # combining after every micro-batch gives the same final .grad
    for half in (slice(0, 16), slice(16, 32)):
        opt.backward([loss / 2 for loss in model.losses(x[half], y[half])])
    torch.testing.assert_close(flat_grad(model), full, rtol=1e-5, atol=1e-7)


def test_step_combines_what_is_pending() -> None:
    model, twin = make_model(), make_model()
    x, y = batch()
    opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.1))
    opt.backward(model.losses(x, y), combine=False)
    assert model.trunk[0].weight.grad is None
    opt.step()
    opt_twin = OSGD(torch.optim.SGD(twin.parameters(), lr=0.1))
    opt_twin.backward(twin.losses(x, y))
    opt_twin.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_clearing_grad_through_the_model_starts_a_new_accumulation() -> None:
    model = make_model()
    opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.1))
    x, y = batch(0)
    opt.backward(model.losses(*batch(5)))
    model.zero_grad()  # not the optimizer's zero_grad: the stale task gradients must go too
    opt.backward(model.losses(x, y))
    torch.testing.assert_close(flat_grad(model), reference_direction(model, x, y, "osgd"), rtol=1e-5, atol=1e-6)


# A GradScaler that runs on the CPU is torch.amp.GradScaler("cpu"), from torch 2.3 on; osgd's floor is 2.1.
needs_cpu_grad_scaler = pytest.mark.skipif(
    not hasattr(torch.amp, "GradScaler"), reason="torch < 2.3 has no GradScaler for the CPU"
)


@needs_cpu_grad_scaler
@pytest.mark.parametrize("method", ["sum", "norm", "osgd", "osgd_norm"])
def test_grad_scaler_gives_the_unscaled_step_for_every_method(method: str) -> None:
    model, twin = make_model(), make_model()
    opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), method=method)
    opt_twin = OSGD(torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9), method=method)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=1)
    for step in range(3):
        x, y = batch(step)
        opt.zero_grad()
        opt.backward(model.losses(x, y), grad_scaler=scaler)
        scaler.step(opt)
        scaler.update()
        opt_twin.zero_grad()
        opt_twin.backward(twin.losses(x, y))
        opt_twin.step()
    assert scaler.get_scale() > 2.0**12  # no overflow was found, the scale grew
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@needs_cpu_grad_scaler
def test_grad_scaler_overflow_skips_the_step_and_the_next_step_is_clean() -> None:
    model, twin = make_model(), make_model()
    opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.1))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    x, y = batch()
    losses = model.losses(x, y)
    losses[1] = losses[1] * float("inf")
    opt.zero_grad()
    opt.backward(losses, grad_scaler=scaler)
    scaler.step(opt)  # finds the inf in .grad and does not call step()
    scaler.update()
    assert scaler.get_scale() == 2.0**7
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    model.zero_grad()  # the model's, not the optimizer's: stale infs must not leak into the next step
    opt.backward(model.losses(x, y), grad_scaler=scaler)
    scaler.step(opt)
    scaler.update()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not torch.equal(model.trunk[0].weight, twin.trunk[0].weight)


def test_autocast_bfloat16_and_bfloat16_parameters() -> None:
    model = make_model(dtype=torch.bfloat16)
    reference = make_model()
    x, y = batch()
    opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.1), method="osgd")
    opt.backward(model.losses(x.bfloat16(), y.bfloat16()))
    assert model.trunk[0].weight.grad.dtype == torch.bfloat16
    got = flat_grad(model)
    expected = reference_direction(reference, x, y, "osgd")
    assert (got - expected).norm() / expected.norm() < 0.05
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())

    fp32 = make_model()
    opt = OSGD(torch.optim.SGD(fp32.parameters(), lr=0.1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = fp32.losses(x, y)
    opt.backward(losses)
    assert fp32.trunk[0].weight.grad.dtype == torch.float32
    assert (flat_grad(fp32) - expected).norm() / expected.norm() < 0.05


def test_nan_loss_skips_the_step_with_a_warning_naming_the_task() -> None:
    model, twin = make_model(), make_model()
    opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    losses = model.losses(*batch())
    losses[2] = losses[2] * float("nan")
    opt.backward(losses)
    with pytest.warns(UserWarning, match=r"skipped the optimizer step: .*task 2 \(its loss is nan\)"):
        opt.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert opt.optimizer.state == {} or all("momentum_buffer" not in s for s in opt.optimizer.state.values())


def test_explicit_task_dims_set_the_normalized_scale() -> None:
    """d_i given by the user replaces the count (the float64 reference normalizes to C sqrt(d_i))."""
    model = make_model()
    x, y = batch()
    dims = [10.0, 200.0, 3000.0]
    J = flat_task_gradients(model.losses(x, y), reached_params(model))
    expected = reference_osgd(reference_normalize(J, dims))  # osgd_norm sums the projected directions
    opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.1), method="osgd_norm", task_dims=dims)
    info = opt.backward(model.losses(x, y))
    assert info.task_dims.tolist() == dims
    torch.testing.assert_close(flat_grad(model), expected, rtol=1e-5, atol=1e-5)


def test_nonfinite_gradient_raises_when_asked() -> None:
    model = make_model()
    opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.1), on_nonfinite="raise")
    losses = model.losses(*batch())
    losses[0] = losses[0] + float("inf") * model.trunk[0].weight.sum()
    with pytest.raises(NonFiniteGradientError, match="task 0"):
        opt.backward(losses)


def test_closure_step_matches_the_plain_step() -> None:
    model, twin = make_model(), make_model()
    x, y = batch()
    opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    opt_twin = OSGD(torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9))

    def closure():
        opt.zero_grad()
        losses = model.losses(x, y)
        opt.backward(losses)
        return sum(losses)

    loss = opt.step(closure)
    assert torch.is_tensor(loss)
    opt_twin.backward(twin.losses(x, y))
    opt_twin.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_closure_combines_what_its_last_backward_left_pending() -> None:
    model, twin = make_model(), make_model()
    x, y = batch()
    opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.1))
    expected = reference_direction(twin, x, y, "osgd")

    def closure():
        opt.zero_grad()
        losses = model.losses(x, y)
        opt.backward(losses, combine=False)  # the step must combine it
        return sum(losses)

    before = torch.cat([p.detach().reshape(-1).double() for p in reached_params(model)])
    opt.step(closure)
    after = torch.cat([p.detach().reshape(-1).double() for p in reached_params(model)])
    torch.testing.assert_close((before - after) / 0.1, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("on_nonfinite", ["skip", "raise"])
def test_closure_with_a_nonfinite_task_leaves_the_weights_alone(on_nonfinite: str) -> None:
    model = make_model()
    x, y = batch()
    opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.1), on_nonfinite=on_nonfinite)

    def closure():
        opt.zero_grad()
        losses = model.losses(x, y)
        losses[1] = losses[1] + float("inf") * model.heads[1][0].weight.sum()
        opt.backward(losses)
        return sum(losses)

    before = [p.detach().clone() for p in model.parameters()]
    if on_nonfinite == "raise":
        with pytest.raises(NonFiniteGradientError, match="task 1"):
            opt.step(closure)
    else:
        with pytest.warns(UserWarning, match="skipped this evaluation's update.*task 1"):
            opt.step(closure)
        assert all(p.grad is None for p in model.parameters())
    for a, b in zip(model.parameters(), before, strict=True):
        assert torch.equal(a, b)


def test_lbfgs_closure_runs() -> None:
    model = make_model()
    x, y = batch()
    opt = OSGD(torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=5))

    def closure():
        opt.zero_grad()
        losses = model.losses(x, y)
        opt.backward(losses)
        return sum(losses)

    with torch.no_grad():
        start = float(sum(model.losses(x, y)))
        opt.step(closure)
        assert float(sum(model.losses(x, y))) < start


def test_reach_masks_set_task_dims_and_the_per_element_mean() -> None:
    """One tensor shared by nested tasks: task 0 reaches its first 2 rows, task 1 all 4."""
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(4, 3))
    x = torch.randn(5, 3)
    row_mask = torch.zeros(4, 3, dtype=torch.bool)
    row_mask[:2] = True

    def losses():
        out = x @ w.T
        return [out[:, :2].pow(2).mean(), out.sin().sum()]

    J = flat_task_gradients(losses(), [w])
    reach = torch.stack([row_mask.reshape(-1), torch.ones(12, dtype=torch.bool)])
    opt = OSGD(torch.optim.SGD([w], lr=0.1), method="norm", reach_masks=[{w: row_mask}, {}])
    info = opt.backward(losses())
    assert info.task_dims.tolist() == [6.0, 12.0]
    torch.testing.assert_close(w.grad.reshape(-1).double(), reference_norm(J, reach), rtol=1e-5, atol=1e-7)


def test_repr_and_protocol_members() -> None:
    model = make_model()
    opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.1), method="osgd_norm", priority=[1, 0, 2])
    assert "OSGD(method='osgd_norm'" in repr(opt)
    assert "SGD" in repr(opt)
    extra = nn.Parameter(torch.zeros(2))
    opt.add_param_group({"params": [extra], "lr": 0.5})
    assert opt.optimizer.param_groups[-1]["lr"] == 0.5
    assert isinstance(opt, torch.optim.Optimizer)
    calls = []
    opt.register_step_post_hook(lambda *_: calls.append(1))
    opt.backward(model.losses(*batch()))
    opt.step()
    assert calls == [1]


def test_bad_input_gives_clear_errors() -> None:
    model = make_model()
    x, y = batch()
    with pytest.raises(TypeError, match=r"wraps a torch\.optim\.Optimizer"):
        OSGD(model.parameters())
    with pytest.raises(ValueError, match="task counts disagree"):
        OSGD(torch.optim.SGD(model.parameters(), lr=0.1), method="sum", priority=[0, 1], task_weights=[1, 1, 1])
    opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.1), priority=[0, 1, 2])
    with pytest.raises(ValueError, match="got 2 losses, but this optimizer combines 3 tasks"):
        opt.backward(model.losses(x, y)[:2])
    with pytest.raises(TypeError, match="list of scalar losses"):
        opt.backward(sum(model.losses(x, y)))
    with pytest.raises(ValueError, match=r"loss 1 must be a scalar tensor, got \(16,\)"):
        opt.backward([model.losses(x, y)[0], model.trunk(x).sum(1), model.losses(x, y)[2]])
    with torch.no_grad():
        detached = model.losses(x, y)
    with pytest.raises(ValueError, match="loss 0 does not require grad"):
        opt.backward(detached)
    with pytest.raises(ValueError, match="on_nonfinite"):
        OSGD(torch.optim.SGD(model.parameters(), lr=0.1), on_nonfinite="ignore")
    with pytest.raises(TypeError, match="OSGD cannot wrap another OSGD"):
        OSGD(opt)
    weight = model.trunk[0].weight
    with pytest.raises(ValueError, match=r"reach_masks\[1\]: a mask must be a bool tensor shaped like its parameter"):
        OSGD(opt.optimizer, reach_masks=[{}, {weight: torch.ones_like(weight)}])  # float, not bool
    with pytest.raises(ValueError, match=r"shaped like its parameter \(8, 6\), got torch.bool \(8,\)"):
        OSGD(opt.optimizer, reach_masks=[{weight: torch.ones(8, dtype=torch.bool)}])
    with pytest.raises(TypeError, match=r"not picklable; checkpoint optimizer\.state_dict"):
        pickle.dumps(opt)


@needs_cpu_grad_scaler
def test_a_grad_scaler_must_be_used_throughout_an_accumulation() -> None:
    model = make_model()
    x, y = batch()
    opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.1))
    scaler = torch.amp.GradScaler("cpu")
    opt.backward(model.losses(x, y), combine=False)
    with pytest.raises(RuntimeError, match="pass the same grad_scaler to every backward"):
        opt.backward(model.losses(x, y), grad_scaler=scaler)
    opt.zero_grad()
    opt.backward(model.losses(x, y), grad_scaler=scaler, combine=False)
    with pytest.raises(RuntimeError, match="the last backward\\(\\) before the step must use combine=True"):
        opt.step()


@pytest.mark.parametrize("method", ["norm", "osgd_norm"])
def test_a_fitted_task_with_subnormal_gradients_leaves_the_step_finite(method: str) -> None:
    """Float32 weights; task 2's loss has gradient 1e-40 everywhere (subnormal, as a task fitted to a
    loss of exactly 0 leaves it). The step moves w along task 1's normalized gradient alone, by the
    closed form in float64: C sqrt(d) g1 / |g1| (NormSGD halves it, each element being reached by
    both tasks). Before the fix the normalizing factor overflowed and w became inf."""
    a = torch.tensor([3.0, -1.0, 2.0, 0.5])
    w = nn.Parameter(torch.tensor([0.1, 0.2, -0.3, 0.4]))
    opt = OSGD(torch.optim.SGD([w], lr=0.1), method=method, on_nonfinite="raise")
    opt.zero_grad()
    start = w.detach().double().clone()
    opt.backward([(w @ a - 1.0) ** 2, torch.tensor(1e-40) * w.sum()])
    opt.step()
    g1 = 2 * (start @ a.double() - 1.0) * a.double()
    step = 0.5 * 4**0.5 * g1 / g1.norm() / (2 if method == "norm" else 1)
    torch.testing.assert_close(w.detach().double(), start - 0.1 * step, rtol=1e-6, atol=1e-6)


def test_no_warnings_in_a_normal_step() -> None:
    model = make_model()
    opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.zero_grad()
        opt.backward(model.losses(*batch()))
        opt.step()
