"""Confidence-based early exit under a compute budget (MSDNet's budgeted batch classification).

Each input leaves at the first stage whose confidence passes that stage's threshold; the last
stage answers for every input still in flight. Thresholds are calibrated on held-out data so that
the average cost meets a budget, given as a fraction of the cost of running every stage.

Costs are the cumulative FLOPs of ``forward_anytime`` through each stage (``StageCost.anytime_flops``:
an input that exits at stage k paid for stages 1..k and their heads), divided by that of the last
stage, so stage S costs 1.

Calibration follows Huang et al., "Multi-Scale Dense Networks for Resource Efficient Image
Classification" (ICLR 2018), section 4: the share of inputs exiting at stage k is taken
proportional to p^(k-1), p is chosen so that the average cost on the calibration data meets the
budget, and each stage's threshold is the confidence quantile that lets that share of the inputs
still in flight exit there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..cost import StageCost, stage_costs
from ..evaluate import stage_outcomes
from ..models.anytime import AnytimeModel, is_anytime_model


def max_softmax(logits: Tensor) -> Tensor:
    """The largest class probability."""
    return logits.float().softmax(dim=-1).amax(dim=-1)


def softmax_margin(logits: Tensor) -> Tensor:
    """The largest class probability minus the second largest."""
    top2 = logits.float().softmax(dim=-1).topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def negative_entropy(logits: Tensor) -> Tensor:
    """Minus the entropy of the class distribution (0 for a one-hot prediction)."""
    log_p = logits.float().log_softmax(dim=-1)
    return (log_p.exp() * log_p).sum(dim=-1)


#: Confidence scores: higher means more confident. Name -> function of logits [..., classes].
SCORES: dict[str, Callable[[Tensor], Tensor]] = {
    "max_softmax": max_softmax,
    "margin": softmax_margin,
    "neg_entropy": negative_entropy,
}


def score_function(score: str) -> Callable[[Tensor], Tensor]:
    if score not in SCORES:
        raise ValueError(f"unknown confidence score {score!r}: use one of {', '.join(SCORES)}")
    return SCORES[score]


def relative_costs(costs: Sequence[StageCost]) -> list[float]:
    """Each stage's ``anytime_flops`` as a fraction of the last stage's (the last is 1)."""
    return [cost.anytime_flops / costs[-1].anytime_flops for cost in costs]


def relative_stage_costs(model: nn.Module, input_size: tuple[int, ...]) -> list[float]:
    """Cost of stopping after each stage as a fraction of running every stage (the last is 1)."""
    return relative_costs(stage_costs(model, input_size))


def exit_stages(scores: Tensor, thresholds: Sequence[float]) -> Tensor:
    """The 1-based stage at which each input exits: the first stage k < S with
    ``scores[k-1] >= thresholds[k-1]``, else S. ``scores``: [stages, inputs]."""
    stages = scores.shape[0]
    if len(thresholds) != stages - 1:
        raise ValueError(f"{stages} stages need {stages - 1} thresholds (the last stage takes every input left)")
    limits = torch.tensor(list(thresholds), dtype=scores.dtype, device=scores.device).view(-1, 1)
    passed = torch.cat([scores[:-1] >= limits, torch.ones_like(scores[:1], dtype=torch.bool)])
    return passed.to(torch.uint8).argmax(dim=0) + 1  # argmax returns the first maximum


def _geometric_thresholds(scores: Tensor, p: float) -> list[float]:
    """Thresholds letting a share proportional to p^(k-1) of all inputs exit at stage k."""
    stages, count = scores.shape
    weights = [p ** (k - stages + 1) if p > 1 else p**k for k in range(stages)]  # scaled to avoid overflow
    shares = [w / sum(weights) for w in weights]
    in_flight = torch.ones(count, dtype=torch.bool)
    thresholds, exited = [], 0
    for k in range(stages - 1):
        target = round(count * sum(shares[: k + 1]))  # cumulative, so rounding errors do not add up
        quota = max(0, min(int(in_flight.sum()), target - exited))
        candidates = scores[k][in_flight]
        if quota == 0:  # nobody exits here, on any data
            threshold = math.inf
        elif quota == len(candidates):  # everybody still in flight exits here, on any data
            threshold = -math.inf
        else:
            threshold = float(candidates.topk(quota).values[-1])
        thresholds.append(threshold)
        leaving = in_flight & (scores[k] >= threshold)
        exited += int(leaving.sum())
        in_flight &= ~leaving
    return thresholds


def expected_cost(scores: Tensor, thresholds: Sequence[float], costs: Sequence[float]) -> float:
    """Average relative cost of early exit with ``thresholds`` over the inputs of ``scores``."""
    stages = exit_stages(scores, thresholds)
    return float(torch.tensor(costs, dtype=torch.float64)[stages - 1].mean())


def calibrate_thresholds(scores: Tensor, costs: Sequence[float], budget: float) -> list[float]:
    """Thresholds whose average cost over ``scores`` ([stages, inputs], held-out data) is as close
    to ``budget`` as the data allows without exceeding it (MSDNet's geometric exit shares)."""
    check_budget(budget, costs)
    scores = scores.double().cpu()
    if budget >= costs[-1]:
        return [math.inf] * (scores.shape[0] - 1)
    low, high = -40.0, 40.0  # log p: p -> 0 sends every input out at stage 1, p -> inf to the last stage
    best = [-math.inf] * (scores.shape[0] - 1)  # the cheapest rule: every input exits at stage 1
    for _ in range(60):
        middle = (low + high) / 2
        thresholds = _geometric_thresholds(scores, math.exp(middle))
        if expected_cost(scores, thresholds, costs) <= budget:
            low, best = middle, thresholds
        else:
            high = middle
    return best


def check_budget(budget: float, costs: Sequence[float]) -> None:
    if not costs[0] <= budget <= costs[-1]:
        raise ValueError(
            f"budget {budget} is outside [{costs[0]:.4g}, 1]: it is the average cost as a fraction of running "
            f"every stage, and no input can cost less than stage 1 ({costs[0]:.4g}) or more than all stages (1)"
        )


def stage_scores(
    model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], score: Callable[[Tensor], Tensor]
) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    """Confidence ``[stages, inputs]`` and top-1 correctness ``[stages, inputs]`` of every stage on
    every input of ``batches`` (CPU), and the size of one input."""
    sizes: list[tuple[int, ...]] = []

    def recorded() -> Iterator[tuple[Tensor, Tensor]]:
        for images, labels in batches:
            sizes.append(tuple(images.shape[1:]))
            yield images, labels

    try:
        correct, _, scores = stage_outcomes(model, recorded(), topk=1, score=score)
    except ValueError as error:
        raise ValueError("the calibration loader yielded no batches: pass held-out data with inputs") from error
    assert scores is not None
    return scores, correct, sizes[0]


def not_anytime_error(model: nn.Module) -> TypeError:
    """What to raise where a model without stages is given to run stage by stage."""
    return TypeError(
        f"{type(model).__name__} has no stages to exit from: early exit needs an anytime model "
        "(one with forward_anytime, e.g. timm.create_model('anytime_cifar_resnet20_w124'))"
    )


@dataclass
class EarlyExit:
    """Run an anytime model so that each input exits at its first confident stage.

    ``logits, stages = ee(x)``: per input, the logits of the stage it exited at and that stage
    (1-based). Later stages run only on the inputs still in flight, continuing from the activations
    already computed (``forward_anytime``'s ``send``).

    Attributes:
        model: The anytime model (put in eval mode by ``__call__``).
        thresholds: One per stage but the last; an input exits at stage k when its confidence is at
            least ``thresholds[k-1]`` (``inf``: nobody exits there).
        costs: Cost of stopping after each stage, relative to running every stage.
        score: Name of the confidence score (see ``SCORES``).
        budget: The budget the thresholds were calibrated for (None if set by hand).
        expected_cost: Average relative cost on the calibration data.
    """

    model: nn.Module
    thresholds: list[float]
    costs: list[float]
    score: str = "max_softmax"
    budget: float | None = None
    expected_cost: float | None = None
    _score_fn: Callable[[Tensor], Tensor] = field(init=False, repr=False)
    _stages: AnytimeModel = field(init=False, repr=False)  # self.model, checked and typed as anytime

    def __post_init__(self) -> None:
        if not is_anytime_model(self.model):
            raise not_anytime_error(self.model)
        self._stages = self.model
        self._score_fn = score_function(self.score)
        n = self.model.num_stages
        if len(self.thresholds) != n - 1 or len(self.costs) != n:
            raise ValueError(
                f"a {n}-stage model needs {n - 1} thresholds and {n} costs, "
                f"got {len(self.thresholds)} and {len(self.costs)}"
            )

    @classmethod
    def calibrate(
        cls,
        model: nn.Module,
        loader: Iterable[tuple[Tensor, Tensor]],
        budget: float,
        *,
        score: str = "max_softmax",
    ) -> EarlyExit:
        """Thresholds for ``model`` whose average cost on ``loader`` (held-out data: never the test
        split) meets ``budget``, a fraction of the cost of running every stage, between stage 1's
        cost and 1."""
        if not is_anytime_model(model):
            raise not_anytime_error(model)
        scores, _, input_size = stage_scores(model, loader, score_function(score))
        return cls.from_scores(model, scores, relative_stage_costs(model, input_size), budget, score=score)

    @classmethod
    def from_scores(
        cls, model: nn.Module, scores: Tensor, costs: Sequence[float], budget: float, *, score: str = "max_softmax"
    ) -> EarlyExit:
        """:meth:`calibrate` from confidence already measured on held-out data (``stage_scores``)
        and the relative stage ``costs``: several budgets need only one pass over the data."""
        thresholds = calibrate_thresholds(scores, costs, budget)
        return cls(model, thresholds, list(costs), score, budget, expected_cost(scores.double(), thresholds, costs))

    @torch.no_grad()
    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits ``[batch, classes]`` of each input's exit stage, and that stage ``[batch]``. Puts
        the model in eval mode (as inference needs) and leaves it there."""
        self.model.eval()
        run = self._stages.forward_anytime(x)
        logits = next(run)
        out = logits.new_empty(len(x), logits.shape[-1])
        stages = torch.full((len(x),), self._stages.num_stages, dtype=torch.long, device=x.device)
        rows = torch.arange(len(x), device=x.device)  # batch positions of the inputs in flight
        for k, threshold in enumerate(self.thresholds, start=1):
            leaving = self._score_fn(logits) >= threshold
            out[rows[leaving]] = logits[leaving]
            stages[rows[leaving]] = k
            staying = torch.nonzero(~leaving).flatten()
            if len(staying) == 0:  # one device read per stage: the size of the next batch
                run.close()
                return out, stages
            rows = rows[staying]
            logits = run.send(staying)
        out[rows] = logits
        run.close()
        return out, stages

    def cost_of(self, stages: Tensor) -> float:
        """Average relative cost of inputs that exited at ``stages``."""
        return float(torch.tensor(self.costs, dtype=torch.float64)[stages.cpu() - 1].mean())


def budget_curve(
    calibration_scores: Tensor,
    test_scores: Tensor,
    test_correct: Tensor,
    costs: Sequence[float],
    budgets: Sequence[float],
) -> list[dict[str, Any]]:
    """Early exit at each budget: thresholds calibrated on ``calibration_scores``, applied to the test
    inputs' per-stage ``test_scores`` and ``test_correct`` ([stages, inputs]). Because a stage's
    logits do not depend on the other inputs of the batch (eval mode), this equals running
    :class:`EarlyExit` on the test inputs."""
    points = []
    index = torch.arange(test_scores.shape[1])
    for budget in budgets:
        thresholds = calibrate_thresholds(calibration_scores, costs, budget)
        stages = exit_stages(test_scores.double(), thresholds)
        correct = test_correct[stages - 1, index]
        counts = torch.bincount(stages - 1, minlength=len(costs))
        points.append(
            {
                "budget": budget,
                "thresholds": thresholds,
                "calibration_cost": expected_cost(calibration_scores.double(), thresholds, costs),
                "test_cost": float(torch.tensor(costs, dtype=torch.float64)[stages - 1].mean()),
                "test_top1_err": round(100 * (1 - float(correct.double().mean())), 4),
                "exit_fractions": [round(float(c) / len(stages), 6) for c in counts],
            }
        )
    return points


def default_budgets(costs: Sequence[float], points: int = 12) -> list[float]:
    """Evenly spaced budgets from stage 1's cost to 1, plus every stage's own cost."""
    grid = [costs[0] + (costs[-1] - costs[0]) * i / (points - 1) for i in range(points)]
    budgets = list(costs)  # exactly, so that the curve meets every fixed stage at its own cost
    budgets += [b for b in grid if min(abs(b - c) for c in costs) > 1e-3]
    return sorted(budgets)
