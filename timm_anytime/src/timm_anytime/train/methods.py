"""The paper's training methods as update rules: per-stage losses of a micro-batch -> ``.grad``.

* ``sgd``: one backward pass of the weighted mean of the stage losses (eq. 1).
* ``normsgd``, ``osgd``, ``osgd_norm``: one backward pass per stage through :class:`osgd.OSGD`,
  which combines the per-stage gradients (and averages them across processes itself).
* ``adaloss``: the weighted sum with AdaLoss weights (the EANN cascade's weighting).
* ``greedy`` (Alg. 1): stage s alone, with every element not introduced at stage s restored after
  each step, so earlier stages stay frozen and later ones untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from torch import Tensor, nn
from torch.optim import Optimizer

from osgd import OSGD, TaskLoss

from ..adaloss import AdaLoss
from ..models.anytime import is_anytime_model, num_stages_of


@dataclass(frozen=True)
class Phase:
    """A stretch of epochs trained with one optimizer and schedule: all epochs for the joint
    methods; one stage each for ``greedy`` (``stage`` set: train D_stage alone)."""

    first_epoch: int
    num_epochs: int
    stage: int | None = None

    @property
    def end_epoch(self) -> int:
        return self.first_epoch + self.num_epochs


def plan_phases(method: str, epochs: int, num_stages: int) -> list[Phase]:
    """``greedy`` splits the epochs across the stages as evenly as possible (earlier stages get the
    remainder); every other method trains all stages together for all epochs."""
    if not TABLE[method].staged or num_stages == 1:
        return [Phase(0, epochs)]
    if epochs < num_stages:
        raise ValueError(f"greedy training needs at least one epoch per stage: {epochs} epochs < {num_stages} stages")
    phases, first = [], 0
    for stage in range(1, num_stages + 1):
        count = epochs // num_stages + (1 if stage <= epochs % num_stages else 0)
        phases.append(Phase(first, count, stage))
        first += count
    return phases


class UpdateRule:
    """Turns one micro-batch's stage losses into gradients (``backward``) and finishes a step."""

    def __init__(self, accelerator: Accelerator) -> None:
        self.accelerator = accelerator

    def sync_context(self, model: nn.Module, last_micro: bool) -> contextlib.AbstractContextManager:
        """Skip DDP's gradient all-reduce on all but the last micro-batch of a step."""
        return contextlib.nullcontext() if last_micro else self.accelerator.no_sync(model)

    def backward(self, losses: Sequence[Tensor], last_micro: bool) -> None:
        raise NotImplementedError

    def after_step(self) -> None:
        """Called after every optimizer step."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class WeightedSum(UpdateRule):
    """``sgd``: one backward pass of ``sum_i k_i L_i / sum_i k_i`` (DDP averages it across processes)."""

    def __init__(self, accelerator: Accelerator, weights: Sequence[float]) -> None:
        super().__init__(accelerator)
        total = float(sum(weights))
        if total <= 0 or any(w < 0 for w in weights):
            raise ValueError(f"stage_weights must be non-negative with a positive sum, got {list(weights)}")
        self.weights = [float(w) / total for w in weights]

    def backward(self, losses: Sequence[Tensor], last_micro: bool) -> None:
        self.accelerator.backward(sum(w * loss for w, loss in zip(self.weights, losses, strict=True)))


class AdaLossSum(UpdateRule):
    """``adaloss``: the sum weighted by AdaLoss (running 1/loss weights, constants for the gradient)."""

    def __init__(self, accelerator: Accelerator, num_stages: int) -> None:
        super().__init__(accelerator)
        self.adaloss = AdaLoss(num_stages)

    def backward(self, losses: Sequence[Tensor], last_micro: bool) -> None:
        self.accelerator.backward(self.adaloss(losses))

    def state_dict(self) -> dict[str, Any]:
        return self.adaloss.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.adaloss.load_state_dict(state)


class Combined(UpdateRule):
    """``normsgd`` / ``osgd`` / ``osgd_norm``: per-stage gradients combined by :class:`osgd.OSGD`."""

    def __init__(self, accelerator: Accelerator, optimizer: OSGD) -> None:
        super().__init__(accelerator)
        self.optimizer = optimizer

    def sync_context(self, model: nn.Module, last_micro: bool) -> contextlib.AbstractContextManager:
        return self.accelerator.no_sync(model)  # OSGD averages the per-stage gradients itself

    def backward(self, losses: Sequence[TaskLoss], last_micro: bool) -> None:
        """Also takes one loss function per stage (the separate stage passes, ``train.stage_passes``)."""
        self.optimizer.backward(losses, grad_scaler=self.accelerator.scaler, combine=last_micro)


class Greedy(WeightedSum):
    """``greedy``: train stage ``stage`` on its own loss; after every step, put back every element
    that stage does not introduce (parameters and their BatchNorm statistics)."""

    def __init__(self, accelerator: Accelerator, model: nn.Module, stage: int) -> None:
        super().__init__(accelerator, [1.0])
        self.stage = stage
        trainable = model.stage_masks(stage) if is_anytime_model(model) else {}
        self.frozen: list[tuple[Tensor, Tensor | None, Tensor]] = []  # (tensor, trainable mask, frozen copy)
        for param in model.parameters():
            mask = trainable.get(param)
            if mask is None or not bool(mask.all()):
                self.frozen.append((param, mask, param.detach().clone()))
        for module in model.modules():  # BatchNorm statistics follow their channels' weights
            mean, var = getattr(module, "running_mean", None), getattr(module, "running_var", None)
            weight = getattr(module, "weight", None)
            if mean is None or var is None or weight is None:
                continue
            mask = trainable.get(weight)
            if mask is None or not bool(mask.all()):
                self.frozen += [(buffer, mask, buffer.detach().clone()) for buffer in (mean, var)]

    @torch.no_grad()
    def after_step(self) -> None:
        for tensor, mask, frozen in self.frozen:
            tensor.copy_(frozen if mask is None else torch.where(mask, tensor, frozen))


@dataclass(frozen=True)
class RuleInputs:
    """What building an update rule may use."""

    accelerator: Accelerator
    model: nn.Module
    optimizer: Optimizer
    stage_weights: Sequence[float] | None = None


def _weighted_sum(inputs: RuleInputs) -> UpdateRule:
    return WeightedSum(inputs.accelerator, inputs.stage_weights or [1.0] * num_stages_of(inputs.model))


def _combined(inputs: RuleInputs) -> UpdateRule:
    if not isinstance(inputs.optimizer, OSGD):
        raise TypeError(f"this method needs the osgd.OSGD optimizer wrapper, got {type(inputs.optimizer).__name__}")
    return Combined(inputs.accelerator, inputs.optimizer)


def _adaloss(inputs: RuleInputs) -> UpdateRule:
    return AdaLossSum(inputs.accelerator, num_stages_of(inputs.model))


@dataclass(frozen=True)
class Method:
    """A training method: how its update rule is built and which settings apply to it."""

    name: str
    #: the rule of a phase that trains every stage
    build: Callable[[RuleInputs], UpdateRule]
    #: ``osgd.OSGD``'s method name when the rule combines per-stage gradients (one backward per stage)
    osgd: str | None = None
    #: trains one stage at a time, each in its own phase with the ``Greedy`` rule (Alg. 1)
    staged: bool = False
    #: which of ``OPTIONAL_SETTINGS`` apply (the others must stay unset)
    options: tuple[str, ...] = ()


#: Settings that apply to some methods only (``TrainConfig.validate`` checks them against ``TABLE``)
OPTIONAL_SETTINGS = ("priority", "stage_weights", "reduction")

#: Every training method. Config validation, the trainer and the CLI read this table, so adding a
#: method is one entry here (plus its ``UpdateRule`` if none of the above fits).
TABLE: dict[str, Method] = {
    method.name: method
    for method in (
        Method("greedy", _weighted_sum, staged=True),  # a one-stage model has one phase: its plain loss
        Method("sgd", _weighted_sum, options=("stage_weights",)),
        Method("normsgd", _combined, osgd="norm", options=("reduction",)),
        Method("osgd", _combined, osgd="osgd", options=("priority", "reduction")),
        Method("osgd_norm", _combined, osgd="osgd_norm", options=("priority", "reduction")),
        Method("adaloss", _adaloss),
    )
}
METHODS = tuple(TABLE)
#: Methods that combine per-stage gradients -> ``osgd.OSGD``'s name for them
OSGD_METHODS = {name: method.osgd for name, method in TABLE.items() if method.osgd is not None}


def build_update_rule(method: str, phase: Phase, inputs: RuleInputs) -> UpdateRule:
    """The update rule of ``method`` for ``phase`` (a greedy phase trains its stage alone)."""
    if phase.stage is not None:
        return Greedy(inputs.accelerator, inputs.model, phase.stage)
    return TABLE[method].build(inputs)
