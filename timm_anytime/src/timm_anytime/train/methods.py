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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from torch import Tensor, nn
from torch.optim import Optimizer

from osgd import OSGD

from ..adaloss import AdaLoss
from ..models.anytime import num_stages_of
from .config import OSGD_METHODS, TrainConfig


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
    if method != "greedy" or num_stages == 1:
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

    def backward(self, losses: Sequence[Tensor], last_micro: bool) -> None:
        self.optimizer.backward(losses, grad_scaler=self.accelerator.scaler, combine=last_micro)


class Greedy(WeightedSum):
    """``greedy``: train stage ``stage`` on its own loss; after every step, put back every element
    that stage does not introduce (parameters and their BatchNorm statistics)."""

    def __init__(self, accelerator: Accelerator, model: nn.Module, stage: int) -> None:
        super().__init__(accelerator, [1.0])
        self.stage = stage
        trainable = model.stage_masks(stage) if hasattr(model, "stage_masks") else {}
        self.frozen: list[tuple[Tensor, Tensor | None, Tensor]] = []  # (tensor, trainable mask, frozen copy)
        for param in model.parameters():
            mask = trainable.get(param)
            if mask is None or not bool(mask.all()):
                self.frozen.append((param, mask, param.detach().clone()))
        for module in model.modules():  # BatchNorm statistics follow their channels' weights
            running = [getattr(module, n, None) for n in ("running_mean", "running_var")]
            weight = getattr(module, "weight", None)
            if running[0] is None or running[1] is None or weight is None:
                continue
            mask = trainable.get(weight)
            if mask is None or not bool(mask.all()):
                self.frozen += [(buffer, mask, buffer.detach().clone()) for buffer in running]

    @torch.no_grad()
    def after_step(self) -> None:
        for tensor, mask, frozen in self.frozen:
            tensor.copy_(frozen if mask is None else torch.where(mask, tensor, frozen))


def build_update_rule(
    cfg: TrainConfig, accelerator: Accelerator, model: nn.Module, optimizer: Optimizer, phase: Phase
) -> UpdateRule:
    if phase.stage is not None:
        return Greedy(accelerator, model, phase.stage)
    if cfg.method in OSGD_METHODS:
        assert isinstance(optimizer, OSGD)
        return Combined(accelerator, optimizer)
    if cfg.method == "adaloss":
        return AdaLossSum(accelerator, num_stages_of(model))
    weights = cfg.stage_weights or [1.0] * num_stages_of(model)
    return WeightedSum(accelerator, weights)
