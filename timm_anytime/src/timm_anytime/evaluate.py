"""Measuring anytime predictors: per-stage accuracy (and confidence) over a dataset, per-input
latency per stage. Pure metrics of a model and batches; evaluating a run folder is in
``run_evaluation``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor, nn

from .models.anytime import is_anytime_model, num_stages_of, stage_logits


@torch.no_grad()
def stage_outcomes(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    topk: int = 5,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    score: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Whether each stage classifies each input right, ``(top1, topk)`` bool [stages, inputs], and
    with ``score`` each stage's confidence in each input (``score(logits)``, float [stages, inputs];
    else None); on the CPU, inputs in the order of ``batches``. The model is evaluated in eval mode."""
    was_training = model.training
    model.eval()
    top1, top_k, scores = [], [], []
    try:
        for images, labels in batches:
            with autocast():
                logits = stage_logits(model, images)
            k = min(topk, logits[0].shape[-1])
            ranked = torch.stack([z.float().topk(k, dim=-1).indices for z in logits])  # [S, B, k]
            hits = ranked == labels.view(1, -1, 1)
            top1.append(hits[..., 0])  # kept on the device: one transfer at the end, no sync per batch
            top_k.append(hits.any(dim=-1))
            if score is not None:
                scores.append(score(torch.stack(logits)))
    finally:
        model.train(was_training)
    if not top1:
        raise ValueError("no evaluation batches: the evaluation set is empty")
    confidence = torch.cat(scores, dim=1).cpu() if score is not None else None
    return torch.cat(top1, dim=1).cpu(), torch.cat(top_k, dim=1).cpu(), confidence


def stage_correct(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    topk: int = 5,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> tuple[Tensor, Tensor]:
    """Whether each stage classifies each input right: ``(top1, topk)`` bool tensors [stages, inputs]
    on the CPU (:func:`stage_outcomes` without scores)."""
    top1, top_k, _ = stage_outcomes(model, batches, topk=topk, autocast=autocast)
    return top1, top_k


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def stage_finish_times(model: nn.Module, images: Tensor, *, warmup: int = 5) -> Tensor:
    """Seconds from the start of inference until each stage's output is ready, for each input run
    alone (batch size 1): float64 [stages, inputs]. Anytime models run ``forward_anytime`` (stage
    k+1 continues from stage k); a plain model is timed as one stage."""
    was_training = model.training
    model.eval()
    device = images.device
    stages = num_stages_of(model)
    times = torch.zeros(stages, len(images), dtype=torch.float64)
    try:
        for index in range(-min(warmup, len(images)), len(images)):
            x = images[index : index + 1] if index >= 0 else images[:1]
            _synchronize(device)
            start = time.perf_counter()
            outputs = model.forward_anytime(x) if is_anytime_model(model) else iter([model(x)])
            for stage, _ in enumerate(outputs):
                _synchronize(device)  # the output must really exist before the clock reads
                if index >= 0:
                    times[stage, index] = time.perf_counter() - start
    finally:
        model.train(was_training)
    return times
