"""Averaging per-task gradients across data-parallel ranks.

The projection is nonlinear, so every rank must combine the same, globally averaged per-task
gradients: they are averaged here before the Gramian, never the combined update after it.
"""

from __future__ import annotations

import torch.distributed as dist
from torch import Tensor


def default_world_size(process_group: dist.ProcessGroup | None = None) -> int:
    """The number of ranks to average over: 1 unless ``torch.distributed`` is initialized."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(process_group)


def all_reduce_mean_(tensors: list[Tensor], process_group: dist.ProcessGroup | None = None) -> None:
    """Average ``tensors`` across ranks in place, one collective each (no-op with a single rank)."""
    world = default_world_size(process_group)
    if world == 1:
        return
    for tensor in tensors:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=process_group)
        tensor.div_(world)
