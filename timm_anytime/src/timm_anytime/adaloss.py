"""AdaLoss (Hu et al. 2019), the loss weighting of the EANN cascade baseline (SPEC section 6)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


class AdaLoss:
    """Weight each exit's loss by ``1 / avg_i`` (normalized to sum to 1), where ``avg_i`` is an
    exponential moving average of that loss. The weights are constants for the gradient.

    Args:
        num_losses: Number of exits.
        momentum: EMA factor: ``avg = momentum * avg + (1 - momentum) * loss``. The first call
            initializes the averages to the losses themselves.
        eps: Floor on the averages.

    ``loss = adaloss(losses)`` returns the weighted sum; ``adaloss.weights`` holds the weights
    used. ``state_dict()``/``load_state_dict()`` make a resumed run continue exactly. Each process
    keeps its own averages (of its own batches).
    """

    def __init__(self, num_losses: int, momentum: float = 0.9, eps: float = 1e-8) -> None:
        if num_losses < 1:
            raise ValueError(f"num_losses must be at least 1, got {num_losses}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.num_losses, self.momentum, self.eps = num_losses, momentum, eps
        self.averages: Tensor | None = None
        self.weights: Tensor | None = None

    def __call__(self, losses: Sequence[Tensor]) -> Tensor:
        if len(losses) != self.num_losses:
            raise ValueError(f"got {len(losses)} losses, but AdaLoss was built for {self.num_losses} exits")
        values = torch.stack([loss.detach().float() for loss in losses])
        if not bool(torch.isfinite(values).all()):
            raise FloatingPointError(f"AdaLoss got a non-finite loss: {values.tolist()}")
        if self.averages is None:
            self.averages = values.clone()
        else:
            self.averages = self.momentum * self.averages.to(values.device) + (1 - self.momentum) * values
        inverse = 1.0 / self.averages.clamp_min(self.eps)
        self.weights = inverse / inverse.sum()
        return sum(w * loss for w, loss in zip(self.weights, losses, strict=True))

    def state_dict(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "averages": None if self.averages is None else self.averages.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.momentum = float(state["momentum"])
        averages = state["averages"]
        self.averages = None if averages is None else torch.as_tensor(averages, dtype=torch.float32)
