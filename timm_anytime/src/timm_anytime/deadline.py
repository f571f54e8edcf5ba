"""Deadline simulation (the paper's section 5.4, Fig. 10): error rates when inference must stop.

Inputs are measured per input and per stage (or per independent network):

* ``correct[s, i]``: whether output s is right on input i.
* ``finish[s, i]``: when output s is ready for input i. For an anytime network this is the
  cumulative latency through stage s; for independent networks, each network's own latency.

At a deadline, an input whose chosen output is not ready gets a random guess, counted by its
expected error ``1 - 1/num_classes`` so the simulation is deterministic. The schemes:

* ``anytime_error`` (the paper's Base and Nest): each input uses its most accurate output that is
  ready by the deadline (accuracy measured over all inputs; for a well-built anytime network that is
  the latest finished stage).
* ``oracle_all_error``: the single most accurate independent network that is ready for *every*
  input is used for all of them (a random guess for all if none is).
* ``oracle_each_error``: each input uses the most accurate independent network ready in time for
  that input (impossible in practice: it needs to know each latency in advance).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _check(correct: Tensor, finish: Tensor, num_classes: int) -> tuple[Tensor, Tensor, float]:
    if correct.ndim != 2 or correct.shape != finish.shape:
        raise ValueError(
            f"correct and finish must both be [outputs, inputs]; got {tuple(correct.shape)} and {tuple(finish.shape)}"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    return correct.bool(), finish.double(), 1.0 - 1.0 / num_classes


def _ranked(correct: Tensor) -> Tensor:
    """Output indices from most to least accurate (ties: the later output first)."""
    accuracy = correct.double().mean(dim=1)
    order = sorted(range(len(accuracy)), key=lambda s: (float(accuracy[s]), s), reverse=True)
    return torch.tensor(order)


def anytime_error(correct: Tensor, finish: Tensor, deadline: float, num_classes: int) -> float:
    """Error when each input uses its most accurate output that is ready by ``deadline``."""
    correct, finish, guess = _check(correct, finish, num_classes)
    errors = torch.full((correct.shape[1],), guess, dtype=torch.float64)
    decided = torch.zeros(correct.shape[1], dtype=torch.bool)
    for s in _ranked(correct):
        use = (finish[s] <= deadline) & ~decided
        errors[use] = (~correct[s, use]).double()
        decided |= use
    return float(errors.mean())


def oracle_each_error(correct: Tensor, latency: Tensor, deadline: float, num_classes: int) -> float:
    """Independent networks, the best one ready in time chosen for each input separately."""
    return anytime_error(correct, latency, deadline, num_classes)


def oracle_all_error(correct: Tensor, latency: Tensor, deadline: float, num_classes: int) -> float:
    """Independent networks, one network for all inputs: the most accurate ready for every input."""
    correct, latency, guess = _check(correct, latency, num_classes)
    for s in _ranked(correct):
        if bool((latency[s] <= deadline).all()):
            return float((~correct[s]).double().mean())
    return guess


def deadline_table(
    deadlines: Sequence[float],
    num_classes: int,
    *,
    anytime: dict[str, tuple[Tensor, Tensor]],
    oracle: tuple[Tensor, Tensor] | None = None,
) -> dict[str, list[float]]:
    """Error rate per deadline for every named anytime network (``{name: (correct, finish)}``) and,
    given independent networks ``(correct, latency)``, for Oracle_All and Oracle_Each."""
    table = {name: [anytime_error(c, f, d, num_classes) for d in deadlines] for name, (c, f) in anytime.items()}
    if oracle is not None:
        table["Oracle_All"] = [oracle_all_error(*oracle, d, num_classes) for d in deadlines]
        table["Oracle_Each"] = [oracle_each_error(*oracle, d, num_classes) for d in deadlines]
    return table
