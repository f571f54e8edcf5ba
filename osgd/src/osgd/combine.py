"""The dense, autograd-free API: combine a stack of task gradients into one direction."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .methods import CombineInfo, Combiner

_CHUNK = 1 << 20  # columns per float64 block: bounds the temporary memory of the Gramian


def gram_matrix(grads: Tensor) -> Tensor:
    """``G = J J^T`` of an ``[n, P]`` matrix, accumulated in float64 in column blocks."""
    if grads.ndim != 2:
        raise ValueError(f"grads must be a matrix [num_tasks, num_params], got shape {tuple(grads.shape)}")
    n = grads.shape[0]
    G = torch.zeros(n, n, dtype=torch.float64, device=grads.device)
    for start in range(0, grads.shape[1], _CHUNK):
        block = grads[:, start : start + _CHUNK].to(torch.float64)
        G += block @ block.T
    return G


def combine_with_info(
    grads: Tensor,
    method: str = "osgd",
    priority: Sequence[int] | None = None,
    task_weights: Sequence[float] | None = None,
    norm_scale: float = 0.5,
    *,
    task_dims: Sequence[float] | None = None,
    reach: Tensor | None = None,
    reduction: str | None = None,
    eps: float = 1e-6,
) -> tuple[Tensor, CombineInfo]:
    """Like :func:`combine`, and also return the :class:`~osgd.CombineInfo` diagnostics."""
    if grads.ndim != 2 or grads.shape[0] == 0:
        raise ValueError(f"grads must be a matrix [num_tasks, num_params], got shape {tuple(grads.shape)}")
    if not grads.is_floating_point():
        raise TypeError(f"grads must be a floating-point tensor, got {grads.dtype}")
    combiner = Combiner(method, priority, task_weights, norm_scale, reduction, eps)
    if reach is None:
        reach = grads != 0  # the paper's zero padding: a task reaches what its gradient touches
    elif reach.shape != grads.shape or reach.dtype != torch.bool:
        raise ValueError(f"reach must be a bool mask shaped like grads {tuple(grads.shape)}")
    dims = reach.sum(dim=1) if task_dims is None else task_dims

    info = combiner.weights(gram_matrix(grads), dims)
    if info.nonfinite_tasks:
        raise ValueError(f"the gradients of tasks {list(info.nonfinite_tasks)} contain NaN or inf")

    compute = torch.float64 if grads.dtype == torch.float64 else torch.float32
    out = info.weights.to(grads.device, compute) @ grads.to(compute)
    if info.reduction == "mean_reached":
        out = out / reach.sum(dim=0).clamp_min(1).to(compute)
    return out.to(grads.dtype), info


def combine(
    grads: Tensor,
    method: str = "osgd",
    priority: Sequence[int] | None = None,
    task_weights: Sequence[float] | None = None,
    norm_scale: float = 0.5,
    *,
    task_dims: Sequence[float] | None = None,
    reach: Tensor | None = None,
    reduction: str | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """Combine per-task gradients ``grads`` (``[n, P]``, zeros where a task has no path) into ``[P]``.

    Args:
        grads: One row per task, in task order.
        method: ``"sum"``, ``"norm"``, ``"osgd"`` or ``"osgd_norm"`` (see :class:`~osgd.Combiner`).
        priority: Task indices, highest priority first; the first passes through unchanged.
        task_weights: Loss weights k_i for ``"sum"``.
        norm_scale: C of the normalized methods.
        task_dims: d_i for the normalized methods; default ``reach.sum(1)``.
        reach: Bool ``[n, P]``: which entries each task reaches. Default ``grads != 0``.
        reduction: ``"sum"``, ``"mean"`` or ``"mean_reached"``; default: the method's paper
            definition.
        eps: Relative norm below which a projected direction is dropped.

    Returns:
        The update direction, in ``grads.dtype`` (computed in float32 or wider).
    """
    out, _ = combine_with_info(
        grads,
        method,
        priority,
        task_weights,
        norm_scale,
        task_dims=task_dims,
        reach=reach,
        reduction=reduction,
        eps=eps,
    )
    return out
