"""Independent float64 references for the combination methods, written from the paper's text.

Nothing here calls into ``osgd``: these are explicit vector loops (Alg. 2 and eq. 2 as printed),
so the package's Gramian-based implementation is checked against a different computation.
"""

from __future__ import annotations

import torch
from torch import Tensor


def reference_osgd(J: Tensor, priority: list[int] | None = None, eps: float = 1e-6) -> Tensor:
    """Alg. 2: Gram-Schmidt on the task vectors in priority order, then the sum of the results."""
    J = J.to(torch.float64)
    order = list(range(J.shape[0])) if priority is None else list(priority)
    basis: list[Tensor] = []
    total = torch.zeros(J.shape[1], dtype=torch.float64)
    for t in order:
        g = J[t].clone()
        original = g.norm()
        for u in basis:  # project out every earlier (already orthogonalized) direction
            g = g - (g @ u) / (u @ u) * u
        if original > 0 and g.norm() > eps * original:
            basis.append(g)
            total += g
    return total


def reference_normalize(J: Tensor, dims: list[float], C: float = 0.5) -> Tensor:
    """Eq. (2): each g_i rescaled to norm C * sqrt(d_i); zero gradients stay zero."""
    J = J.to(torch.float64)
    out = torch.zeros_like(J)
    for i in range(J.shape[0]):
        n = J[i].norm()
        if n > 0:
            out[i] = J[i] / n * (dims[i] ** 0.5) * C
    return out


def reference_norm(J: Tensor, reach: Tensor, C: float = 0.5) -> Tensor:
    """NormSGD: normalized gradients, each element averaged over the tasks that reach it."""
    dims = reach.sum(1).tolist()
    normalized = reference_normalize(J, dims, C)
    count = reach.sum(0).clamp_min(1).to(torch.float64)
    return normalized.sum(0) / count


def flat_task_gradients(losses: list[Tensor], params: list[Tensor]) -> Tensor:
    """J [n, P]: each loss's gradient over all params, zeros where it has no path (dense)."""
    rows = []
    for i, loss in enumerate(losses):
        grads = torch.autograd.grad(loss, params, retain_graph=i < len(losses) - 1, allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (torch.zeros_like(p) if g is None else g).reshape(-1).to(torch.float64)
                    for p, g in zip(params, grads, strict=True)
                ]
            )
        )
    return torch.stack(rows)
