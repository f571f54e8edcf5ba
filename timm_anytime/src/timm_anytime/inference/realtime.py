"""Answer by a deadline: run stage after stage and return the last finished stage's prediction.

A stage is started only if its measured latency still fits before the deadline, so (as long as
each stage takes about its measured time) the answer comes back in time, never later than the
deadline plus one stage's latency.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..models.anytime import is_anytime_model
from .early_exit import not_anytime_error

#: Measured latencies per model and input shape, so that the first call pays for the measurement
_MEASURED: weakref.WeakKeyDictionary[nn.Module, dict[tuple, list[float]]] = weakref.WeakKeyDictionary()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_stage_seconds(model: nn.Module, x: Tensor, *, repeats: int = 10, warmup: int = 3) -> list[float]:
    """The median wall time each stage of ``forward_anytime(x)`` adds, on this machine and device,
    in seconds (stage k: from stage k-1's output to stage k's). Leaves ``model`` in eval mode."""
    if not is_anytime_model(model):
        raise not_anytime_error(model)
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    model.eval()
    samples: list[list[float]] = []
    for index in range(warmup + repeats):
        _synchronize(x.device)
        times, start = [], time.perf_counter()
        for _ in model.forward_anytime(x):
            _synchronize(x.device)
            times.append(time.perf_counter())
        if index >= warmup:
            samples.append([t - s for t, s in zip(times, [start, *times[:-1]], strict=True)])
    return [float(torch.tensor(column).median()) for column in zip(*samples, strict=True)]


def stage_seconds_for(model: nn.Module, x: Tensor) -> list[float]:
    """:func:`measure_stage_seconds` for inputs shaped like ``x``, measured once per model and shape."""
    key = (tuple(x.shape), x.dtype, str(x.device))
    cached = _MEASURED.setdefault(model, {})
    if key not in cached:
        cached[key] = measure_stage_seconds(model, x)
    return cached[key]


@torch.no_grad()
def predict_within(
    model: nn.Module,
    x: Tensor,
    seconds: float,
    *,
    stage_seconds: Sequence[float] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[Tensor | None, int]:
    """The logits of the last stage that finishes within ``seconds`` of the call, and that stage
    (1-based); ``(None, 0)`` when not even stage 1 fits.

    Stages run one after another through ``forward_anytime`` (each continues from the last); stage
    k+1 starts only if the time spent so far plus its latency fits the deadline. The latencies are
    ``stage_seconds`` (what each stage adds, in seconds), else measured on this machine for inputs
    shaped like ``x`` on the first call (:func:`measure_stage_seconds`) and remembered.
    ``clock`` reads the time in seconds (a fake clock makes the behaviour testable). Puts ``model``
    in eval mode (running BatchNorm statistics, no dropout), as inference needs, and leaves it there.
    """
    if not is_anytime_model(model):
        raise not_anytime_error(model)
    if not seconds > 0:
        raise ValueError(f"seconds must be a positive deadline, got {seconds}")
    start = clock()
    latencies = list(stage_seconds) if stage_seconds is not None else stage_seconds_for(model, x)
    if len(latencies) != model.num_stages:
        raise ValueError(f"stage_seconds needs one latency per stage ({model.num_stages}), got {len(latencies)}")
    model.eval()
    if stage_seconds is None:  # the measurement's own time does not count against the deadline
        start = clock()
    logits: Tensor | None = None
    stage = 0
    run = model.forward_anytime(x)
    try:
        for latency in latencies:
            if clock() - start + latency > seconds:
                break
            logits = next(run)
            _synchronize(x.device)  # the answer must exist before the clock is read again
            stage += 1
    finally:
        run.close()
    return logits, stage
