"""Flat per-task gradient buffers: the storage behind :class:`osgd.OSGD`.

The parameters are grouped by (device, dtype). Each group keeps one ``[num_tasks, numel]`` buffer
whose row t holds task t's accumulated gradient of every parameter in the group, flattened and
zero where the task does not reach. Adding a task's gradients is one ``torch._foreach_add_``, the
Gramian is one matrix product per group, and the combined direction is one matrix-vector product
per group, split into views that become the parameters' ``.grad``. No step issues one kernel per
parameter, which is what dominates a small network's step on a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .combine import gram_matrix

#: Low-precision parameters accumulate and combine in float32, then cast back.
_LOW_PRECISION = (torch.float16, torch.bfloat16)

Pattern = tuple[tuple[bool, ...], ...]  # per task, per parameter: whether the task reached it


@dataclass
class _Group:
    """Parameters of one device and dtype, laid out back to back."""

    index: list[int]  # positions in TaskGradients.params
    buffer: Tensor  # [num_tasks, numel]
    rows: list[list[Tensor]]  # rows[t][j]: view of buffer[t] shaped like parameter index[j]
    numels: list[int]


class TaskGradients:
    """Accumulated per-task gradients of a fixed list of parameters, stored flat.

    Args:
        params: The parameters, in a fixed order.
        num_tasks: Rows of every buffer.
    """

    def __init__(self, params: Sequence[Tensor], num_tasks: int) -> None:
        self.params = list(params)
        self.num_tasks = num_tasks
        self.key = self.key_of(self.params, num_tasks)
        members: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for i, param in enumerate(self.params):
            members.setdefault((param.device, param.dtype), []).append(i)
        self.groups: list[_Group] = []
        for (device, dtype), index in members.items():
            numels = [self.params[i].numel() for i in index]
            buffer_dtype = torch.float32 if dtype in _LOW_PRECISION else dtype
            buffer = torch.zeros(num_tasks, sum(numels), device=device, dtype=buffer_dtype)
            rows = [
                [view.view(self.params[i].shape) for view, i in zip(buffer[t].split(numels), index, strict=True)]
                for t in range(num_tasks)
            ]
            self.groups.append(_Group(index, buffer, rows, numels))
        self.reached = [[False] * len(self.params) for _ in range(num_tasks)]
        self._count_cache: dict[Pattern, list[Tensor | None]] = {}

    @staticmethod
    def key_of(params: Sequence[Tensor], num_tasks: int) -> tuple[object, ...]:
        """What a layout depends on: the parameters (identity, shape, dtype, device) and the task count."""
        return (num_tasks, *((id(p), p.shape, p.dtype, p.device) for p in params))

    def zero_(self) -> None:
        """Start a new accumulation (one fill per group)."""
        for group in self.groups:
            group.buffer.zero_()
        self.reached = [[False] * len(self.params) for _ in range(self.num_tasks)]

    def add_(self, task: int, grads: Sequence[Tensor | None]) -> None:
        """Add one task's gradients (None: the task does not reach that parameter)."""
        reached = self.reached[task]
        for group in self.groups:
            rows = group.rows[task]
            pairs = [(rows[j], grads[i]) for j, i in enumerate(group.index) if grads[i] is not None]
            if pairs:
                views, values = zip(*pairs, strict=True)
                torch._foreach_add_(list(views), list(values))
        for i, grad in enumerate(grads):
            if grad is not None:
                reached[i] = True

    def buffers(self) -> list[Tensor]:
        """The ``[num_tasks, numel]`` buffer of every group (e.g. to all-reduce them in place)."""
        return [group.buffer for group in self.groups]

    def pattern(self) -> Pattern:
        return tuple(tuple(row) for row in self.reached)

    def any_reached(self) -> list[bool]:
        return [any(row[i] for row in self.reached) for i in range(len(self.params))]

    def gram(self) -> Tensor:
        """``G = J J^T``, float64 on the CPU (one read of the device per group)."""
        gram = torch.zeros(self.num_tasks, self.num_tasks, dtype=torch.float64)
        for group in self.groups:
            gram += gram_matrix(group.buffer).cpu()
        return gram

    def task_dims(self, mask_counts: Sequence[Mapping[Tensor, int]] | None) -> list[float]:
        """d_i: the elements of the parameters each task reached (masked ones counted by their mask)."""
        dims = []
        for task, row in enumerate(self.reached):
            counts = mask_counts[task] if mask_counts is not None else {}
            dims.append(float(sum(counts.get(p, p.numel()) for p, hit in zip(self.params, row, strict=True) if hit)))
        return dims

    def _reach_counts(self, masks: Sequence[Mapping[Tensor, Tensor]] | None) -> list[Tensor | None]:
        """Per group, how many reaching tasks cover each element (at least 1); cached per pattern."""
        pattern = self.pattern()
        if pattern not in self._count_cache:
            counts: list[Tensor | None] = []
            for group in self.groups:
                count = torch.zeros(group.buffer.shape[1], dtype=group.buffer.dtype, device=group.buffer.device)
                parts = count.split(group.numels)
                for j, i in enumerate(group.index):
                    param = self.params[i]
                    for task in range(self.num_tasks):
                        if not self.reached[task][i]:
                            continue
                        mask = None if masks is None else masks[task].get(param)
                        parts[j].add_(1.0 if mask is None else mask.reshape(-1).to(count.dtype))
                counts.append(count.clamp_min_(1.0))
            self._count_cache[pattern] = counts
        return self._count_cache[pattern]

    def write_combination(
        self,
        weights: Sequence[float] | Tensor,
        *,
        per_element_mean: bool = False,
        masks: Sequence[Mapping[Tensor, Tensor]] | None = None,
    ) -> list[Tensor]:
        """Set ``.grad = sum_t weights[t] * g_t`` on every parameter some task reached.

        With ``per_element_mean``, each element is further divided by the number of reaching tasks
        (``masks`` restrict a task to part of a parameter). Returns the parameters written; the
        others keep ``grad=None``. The gradients are views of one new tensor per group.
        """
        weights = torch.as_tensor(weights, dtype=torch.float64)
        counts = self._reach_counts(masks) if per_element_mean else [None] * len(self.groups)
        hit = self.any_reached()
        written = []
        for group, count in zip(self.groups, counts, strict=True):
            buffer = group.buffer
            direction = weights.to(buffer.device, buffer.dtype) @ buffer
            if count is not None:
                direction = direction.div_(count)
            dtype = self.params[group.index[0]].dtype
            if direction.dtype != dtype:
                direction = direction.to(dtype)
            for view, i in zip(direction.split(group.numels), group.index, strict=True):
                if hit[i]:
                    param = self.params[i]
                    param.grad = view.view(param.shape)
                    written.append(param)
        return written
