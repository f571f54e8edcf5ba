"""Averaging per-task gradients across data-parallel ranks.

The projection is nonlinear, so every rank must combine the same, globally averaged per-task
gradients: they are averaged here before the Gramian, never the combined update after it.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.distributed as dist
from torch import Tensor
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


def default_world_size(process_group: dist.ProcessGroup | None = None) -> int:
    """The number of ranks to average over: 1 unless ``torch.distributed`` is initialized."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(process_group)


def all_reduce_mean(tensors: list[Tensor], process_group: dist.ProcessGroup | None = None) -> list[Tensor]:
    """Return the rank-average of ``tensors`` as new tensors: one collective per (device, dtype).

    Every rank must pass tensors of the same shapes in the same order.
    """
    world = default_world_size(process_group)
    if world == 1 or not tensors:
        return list(tensors)
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
    for index, tensor in enumerate(tensors):
        buckets[(tensor.device, tensor.dtype)].append(index)
    out: list[Tensor] = list(tensors)
    for _, indices in sorted(buckets.items(), key=lambda item: (str(item[0][0]), str(item[0][1]))):
        members = [tensors[i] for i in indices]
        flat = _flatten_dense_tensors(members)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=process_group)
        flat.div_(world)
        for i, reduced in zip(indices, _unflatten_dense_tensors(flat, members), strict=True):
            out[i] = reduced
    return out
