"""Gradient checkpointing whose recomputation leaves BatchNorm's running statistics alone.

torch's checkpoint reruns a block's forward during the backward pass. In training mode that rerun
would update every BatchNorm's running statistics (and batch count) again: twice per step, or
1 + S times when OSGD runs one backward pass per stage on a kept graph. Here the rerun runs with
momentum 0 (the running statistics are multiplied by 1 and receive 0 of the batch: unchanged, and
the operations and saved tensors are those of the first forward) and the batch counts are put
back afterwards, so checkpointing changes memory and time, not the trained state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
import torch.utils.checkpoint
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


class RunningStatisticsKept:
    """Inside, every BatchNorm of ``module`` still normalizes as before but leaves its running
    statistics and batch count as they were. Reusable: torch enters a checkpoint's recomputation
    context once per backward pass that reruns it (osgd's kept graph: once per stage)."""

    def __init__(self, module: nn.Module) -> None:
        self.norms = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
        self.saved: list[tuple[float | None, Tensor | None]] = []

    def __enter__(self) -> None:
        self.saved = [
            (m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in self.norms
        ]
        for norm in self.norms:
            norm.momentum = 0.0

    def __exit__(self, *exc: object) -> None:
        for norm, (momentum, count) in zip(self.norms, self.saved, strict=True):
            norm.momentum = momentum
            tracked = norm.num_batches_tracked
            if count is not None and tracked is not None:  # saved from it: both or neither
                tracked.copy_(count)


def checkpointed(module: nn.Module, x: Tensor) -> Tensor:
    """``module(x)`` under torch's non-reentrant checkpoint, its recomputation inside
    :class:`RunningStatisticsKept`. Under ``torch.compile``, which does not take a ``context_fn``
    (torch 2.14), plain checkpointing: there the recomputation updates the statistics again, as for
    timm's own models (``anytime-train`` refuses ``--grad-checkpointing`` with ``--compile``)."""
    if torch.compiler.is_compiling():
        return torch.utils.checkpoint.checkpoint(module, x, use_reentrant=False)
    return torch.utils.checkpoint.checkpoint(  # looked up at call time (tests count the calls)
        module, x, use_reentrant=False, context_fn=lambda: (contextlib.nullcontext(), RunningStatisticsKept(module))
    )


def checkpoint_blocks(blocks: Iterable[nn.Module], x: Tensor) -> Tensor:
    """Run ``blocks`` in order, each checkpointed (:func:`checkpointed`): timm's
    ``checkpoint_seq(stages, x, flatten=True)`` for a list of ``nn.Sequential`` stages, without the
    second update of the running statistics."""
    for stage in blocks:
        for block in stage.children() if isinstance(stage, nn.Sequential) else (stage,):
            x = checkpointed(block, x)
    return x
