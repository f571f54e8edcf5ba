"""``OSGD.backward`` with per-task loss functions: one graph per task, alive only for its own pass."""

from __future__ import annotations

import pytest
import torch

from osgd import OSGD
from tests.osgd.multihead import batch, make_model, reached_params
from tests.osgd.reference import flat_task_gradients, reference_osgd


def task_functions(model, x, y, seen: list[torch.Tensor]):
    """One function per task, each with its own forward of the trunk (its own graph)."""

    def loss_of(task: int):
        def compute() -> torch.Tensor:
            loss = model.losses(x, y)[task]
            seen.append(loss)
            return loss

        return compute

    return [loss_of(t) for t in range(len(model.heads))]


@pytest.mark.parametrize("priority", [None, [2, 0, 1]])
def test_functions_give_the_reference_combination(priority) -> None:
    model = make_model()
    x, y = batch()
    J = flat_task_gradients(model.losses(x, y), reached_params(model))  # float64, one shared graph
    expected = reference_osgd(J, priority)
    opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.1), method="osgd", priority=priority)
    opt.backward(task_functions(model, x, y, []))
    got = torch.cat([p.grad.reshape(-1).double() for p in reached_params(model)])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert model.unused.weight.grad is None


def test_each_functions_graph_is_freed_after_its_pass() -> None:
    model = make_model()
    seen: list[torch.Tensor] = []
    opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.1))
    opt.backward(task_functions(model, *batch(), seen))
    assert len(seen) == 3
    for loss in seen:  # not retained: a second pass through any of them fails
        with pytest.raises(RuntimeError, match="second time"):
            torch.autograd.grad(loss, model.trunk[0].weight)


def test_tensors_and_functions_mix_and_accumulate() -> None:
    model = make_model()
    x, y = batch()
    reference = OSGD(torch.optim.SGD(model.parameters(), lr=0.1))
    reference.backward(model.losses(x, y))
    expected = [p.grad.clone() for p in reached_params(model)]
    model.zero_grad()
    opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.1))
    halves = (slice(0, 8), slice(8, 16))
    for i, half in enumerate(halves):  # accumulation: two micro-batches of half the loss each
        losses = model.losses(x[half], y[half])
        entries = [losses[0] / 2, lambda h=half: model.losses(x[h], y[h])[1] / 2, losses[2] / 2]
        opt.backward(entries, combine=i == 1)
    for param, want in zip(reached_params(model), expected, strict=True):
        torch.testing.assert_close(param.grad, want, rtol=1e-5, atol=1e-7)


def test_a_bad_function_result_names_the_task_and_leaves_grad_alone() -> None:
    model = make_model()
    x, y = batch()
    opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.1))
    opt.backward(model.losses(x, y))
    before = [p.grad.clone() for p in reached_params(model)]
    entries = [lambda: model.losses(x, y)[0], lambda: model.trunk(x).sum(1), lambda: model.losses(x, y)[2]]
    with pytest.raises(ValueError, match=r"loss 1 \(returned by its function\) must be a scalar tensor"):
        opt.backward(entries)
    with pytest.raises(ValueError, match="must be a scalar tensor or a function"):
        opt.backward([model.losses(x, y)[0], "loss", model.losses(x, y)[2]])
    for param, want in zip(reached_params(model), before, strict=True):
        torch.testing.assert_close(param.grad, want)
    opt.zero_grad()  # and the optimizer still works afterwards
    opt.backward(task_functions(model, x, y, []))
    opt.step()
