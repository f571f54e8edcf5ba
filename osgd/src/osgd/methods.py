"""Combination weights from the task Gramian: the math shared by every method.

Each method turns the per-task gradients g_1..g_n (rows of J) into one update direction
``sum_i w_i g_i``, optionally divided per element by the number of tasks that reach it. Every
``w`` here depends on J only through the n x n Gramian ``G = J J^T``, so the same code serves the
dense :func:`osgd.combine` and the per-parameter :class:`osgd.OSGD` optimizer. All arithmetic on
``G`` is float64 on the CPU: n is small, and the Gramian squares the condition number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

Method = Literal["sum", "norm", "osgd", "osgd_norm"]
Reduction = Literal["sum", "mean", "mean_reached"]

METHODS: tuple[str, ...] = ("sum", "norm", "osgd", "osgd_norm")
REDUCTIONS: tuple[str, ...] = ("sum", "mean", "mean_reached")
#: The paper's definitions: eq. (1) averages the losses, NormSGD averages over the tasks that
#: reach each parameter, Alg. 2 sums the orthogonalized vectors.
DEFAULT_REDUCTION: dict[str, str] = {
    "sum": "mean",
    "norm": "mean_reached",
    "osgd": "sum",
    "osgd_norm": "sum",
}

#: The normalized methods treat a gradient whose root-mean-square entry ``|g_i| / sqrt(d_i)`` is
#: below float32's smallest normal number (1.2e-38) as zero, as they treat an exactly zero one: its
#: entries are subnormal rounding residue, not a direction, and the factor that would normalize it
#: (``C / rms``, over 1e38) overflows float32. A task trained to a loss of exactly 0 gets there;
#: before this guard its gradient turned the update into inf and the weights into NaN.
SMALLEST_NORMALIZABLE_RMS: float = torch.finfo(torch.float32).tiny


@dataclass(frozen=True)
class CombineInfo:
    """Diagnostics of one combination, all float64 CPU tensors indexed by task (not priority).

    Attributes:
        method: The combination method.
        priority: Task indices, highest priority first.
        reduction: ``"sum"``, ``"mean"`` (already folded into ``weights``) or ``"mean_reached"``
            (each element further divided by the number of tasks that reach it).
        weights: The update is ``sum_i weights[i] * g_i`` (before a ``mean_reached`` divisor).
        grad_norm: ``|g_i|``.
        gram: ``G[i, j] = g_i . g_j``.
        cosine: Pairwise cosine similarity (0 where a gradient is zero).
        removed_fraction: ``1 - |u_i| / |g_i|``: the fraction of task i's (normalized) gradient
            norm removed by the projection; 0 for ``sum`` and ``norm``, 1 for a dropped direction.
        task_dims: d_i, the number of parameters task i reaches.
        nonfinite_tasks: Tasks whose gradient holds NaN or inf (then ``weights`` is NaN).
    """

    method: str
    priority: tuple[int, ...]
    reduction: str
    weights: Tensor
    grad_norm: Tensor
    gram: Tensor
    cosine: Tensor
    removed_fraction: Tensor
    task_dims: Tensor
    nonfinite_tasks: tuple[int, ...] = field(default=())

    @property
    def num_tasks(self) -> int:
        return self.gram.shape[0]

    def as_dict(self) -> dict[str, object]:
        """Plain Python values, ready for a JSON log or a tracker."""
        return {
            "method": self.method,
            "priority": list(self.priority),
            "reduction": self.reduction,
            "weights": self.weights.tolist(),
            "grad_norm": self.grad_norm.tolist(),
            "cosine": self.cosine.tolist(),
            "removed_fraction": self.removed_fraction.tolist(),
            "task_dims": self.task_dims.tolist(),
            "nonfinite_tasks": list(self.nonfinite_tasks),
        }


def _check_permutation(priority: Sequence[int], n: int | None) -> tuple[int, ...]:
    order = tuple(int(i) for i in priority)
    size = len(order) if n is None else n
    if sorted(order) != list(range(size)):
        raise ValueError(
            f"priority={list(order)} must be a permutation of the task indices "
            f"0..{size - 1} (highest priority first), e.g. {list(range(size))}"
        )
    return order


@dataclass(frozen=True)
class Combiner:
    """A validated combination rule: method, priority, weights and reduction.

    Args:
        method: ``"sum"`` (SGD, eq. 1), ``"norm"`` (NormSGD, eq. 2), ``"osgd"`` (Alg. 2) or
            ``"osgd_norm"`` (Alg. 2 with line 7).
        priority: Permutation of task indices, highest priority first. Default: 0, 1, ..., n-1.
        task_weights: Loss weights k_i; only for ``method="sum"``.
        norm_scale: C, the target norm per sqrt(parameter) of the normalized methods.
        reduction: ``"sum"``, ``"mean"`` (divide by sum k_i, i.e. n unless weighted) or
            ``"mean_reached"`` (per element, by the number of tasks reaching it). ``None`` picks
            the paper's definition for the method (:data:`DEFAULT_REDUCTION`).
        eps: A direction whose norm left after projection is below ``eps * |g|`` is dropped.
    """

    method: str = "osgd"
    priority: Sequence[int] | None = None  # stored as a tuple
    task_weights: Sequence[float] | None = None  # stored as a tuple
    norm_scale: float = 0.5
    reduction: str | None = None
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            hint = " ('greedy' is a training schedule, not a combination)" if self.method == "greedy" else ""
            raise ValueError(f"unknown method {self.method!r}{hint}; choose one of {list(METHODS)}")
        if self.reduction is None:
            object.__setattr__(self, "reduction", DEFAULT_REDUCTION[self.method])
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {self.reduction!r}; choose one of {list(REDUCTIONS)}")
        if self.priority is not None:
            object.__setattr__(self, "priority", _check_permutation(self.priority, None))
        if self.task_weights is not None:
            if self.method != "sum":
                raise ValueError(
                    f"task_weights only apply to method='sum' (got method={self.method!r}): the "
                    "normalized methods remove loss scale and OSGD's projection ignores it"
                )
            weights = tuple(float(k) for k in self.task_weights)
            if any(not math.isfinite(k) or k < 0 for k in weights) or sum(weights) <= 0:
                raise ValueError(f"task_weights={list(weights)} must be finite, >= 0, with a positive sum")
            object.__setattr__(self, "task_weights", weights)
        if not (math.isfinite(self.norm_scale) and self.norm_scale > 0):
            raise ValueError(f"norm_scale must be a positive number, got {self.norm_scale}")
        if not (0 <= self.eps < 1):
            raise ValueError(f"eps must be in [0, 1), got {self.eps}")

    def resolved_priority(self, n: int) -> tuple[int, ...]:
        """The priority order for ``n`` tasks (loss order by default); refuses a mismatched length."""
        if self.priority is None:
            return tuple(range(n))
        if len(self.priority) != n:
            raise ValueError(f"priority={list(self.priority)} names {len(self.priority)} tasks, but got {n} losses")
        return tuple(self.priority)

    def _loss_weights(self, n: int) -> Tensor:
        if self.task_weights is None:
            return torch.ones(n, dtype=torch.float64)
        if len(self.task_weights) != n:
            raise ValueError(f"task_weights has {len(self.task_weights)} entries, but got {n} losses")
        return torch.tensor(self.task_weights, dtype=torch.float64)

    def weights(self, gram: Tensor, task_dims: Sequence[float] | Tensor) -> CombineInfo:
        """Combination weights and diagnostics from the Gramian ``G = J J^T`` of the task gradients."""
        G = gram.detach().to("cpu", torch.float64)
        if G.ndim != 2 or G.shape[0] != G.shape[1] or G.shape[0] == 0:
            raise ValueError(f"gram must be a non-empty square matrix, got shape {tuple(G.shape)}")
        n = G.shape[0]
        reduction = DEFAULT_REDUCTION[self.method] if self.reduction is None else self.reduction  # set in __post_init__
        order = self.resolved_priority(n)
        k = self._loss_weights(n)
        dims = torch.as_tensor(task_dims, dtype=torch.float64).reshape(-1)
        if dims.numel() != n:
            raise ValueError(f"task_dims has {dims.numel()} entries, but got {n} losses")

        diag = G.diagonal()
        nonfinite = tuple(i for i in range(n) if not math.isfinite(float(diag[i])))
        norm = diag.clamp_min(0).sqrt()
        safe = torch.where(norm > 0, norm, torch.ones_like(norm))
        cosine = torch.where(
            (norm[:, None] > 0) & (norm[None, :] > 0), G / (safe[:, None] * safe[None, :]), torch.zeros_like(G)
        )
        if nonfinite:
            nan = torch.full((n,), math.nan, dtype=torch.float64)
            return CombineInfo(self.method, order, reduction, nan, norm, G, cosine, nan, dims, nonfinite)

        if self.method in ("norm", "osgd_norm"):
            # eq. (2): g_i / |g_i| * sqrt(d_i) * C; a numerically zero gradient stays zero.
            normalizable = norm >= SMALLEST_NORMALIZABLE_RMS * dims.sqrt()
            scale = torch.where(normalizable, self.norm_scale * dims.sqrt() / safe, torch.zeros_like(norm))
        else:
            scale = torch.ones(n, dtype=torch.float64)

        if self.method in ("osgd", "osgd_norm"):
            scaled_gram = scale[:, None] * G * scale[None, :]
            coefficients, residual = gram_schmidt(scaled_gram, order, self.eps)
            weights = scale * coefficients
            scaled_norm = scaled_gram.diagonal().clamp_min(0).sqrt()
            removed = torch.where(scaled_norm > 0, 1 - residual / torch.where(scaled_norm > 0, scaled_norm, 1.0), 0.0)
        else:
            weights = scale * k
            removed = torch.zeros(n, dtype=torch.float64)

        if reduction == "mean":
            weights = weights / k.sum()
        return CombineInfo(self.method, order, reduction, weights, norm, G, cosine, removed, dims)


def gram_schmidt(gram: Tensor, priority: Sequence[int], eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Modified Gram-Schmidt carried out on coefficients, from the Gramian alone.

    With ``u_k = g_p(k) - sum_{j<k} proj_{u_j} g_p(k)``, every ``u_k`` is a linear combination
    ``C[p(k)] @ J`` of the task gradients. This returns ``(C.sum(0), |u|)``: the weights that make
    ``sum_k u_k = weights @ J``, and each task's remaining norm (indexed by task). A direction whose
    remaining norm is at most ``eps * |g_p(k)|`` is dropped (zero), so zero or linearly dependent
    gradients never divide by zero.
    """
    G = gram.to(torch.float64)
    n = G.shape[0]
    C = torch.zeros(n, n, dtype=torch.float64)
    residual = torch.zeros(n, dtype=torch.float64)
    kept: list[int] = []
    for t in priority:
        c = torch.zeros(n, dtype=torch.float64)
        c[t] = 1.0
        for j in kept:  # modified form: project the running vector, not the original
            c = c - (c @ G @ C[j]) / residual[j] ** 2 * C[j]
        remaining2 = float(c @ G @ c)
        if G[t, t] > 0 and remaining2 > (eps**2) * float(G[t, t]):
            C[t] = c
            residual[t] = math.sqrt(remaining2)
            kept.append(t)
    return C.sum(0), residual
