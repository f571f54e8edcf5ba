"""Evaluating anytime predictors: per-stage accuracy over a dataset, per-input latency per stage."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from .models.anytime import num_stages_of, stage_logits


@torch.no_grad()
def stage_correct(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    topk: int = 5,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> tuple[Tensor, Tensor]:
    """Whether each stage classifies each input right: ``(top1, topk)`` bool tensors [stages, inputs]
    on the CPU, inputs in the order of ``batches``. The model is evaluated in eval mode."""
    was_training = model.training
    model.eval()
    top1, top_k = [], []
    try:
        for images, labels in batches:
            with autocast():
                logits = stage_logits(model, images)
            k = min(topk, logits[0].shape[-1])
            ranked = torch.stack([z.float().topk(k, dim=-1).indices for z in logits])  # [S, B, k]
            hits = ranked == labels.view(1, -1, 1)
            top1.append(hits[..., 0])  # kept on the device: one transfer at the end, no sync per batch
            top_k.append(hits.any(dim=-1))
    finally:
        model.train(was_training)
    if not top1:
        raise ValueError("no evaluation batches: the evaluation set is empty")
    return torch.cat(top1, dim=1).cpu(), torch.cat(top_k, dim=1).cpu()


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
            outputs = model.forward_anytime(x) if hasattr(model, "forward_anytime") else iter([model(x)])
            for stage, _ in enumerate(outputs):
                _synchronize(device)  # the output must really exist before the clock reads
                if index >= 0:
                    times[stage, index] = time.perf_counter() - start
    finally:
        model.train(was_training)
    return times


def _first_images(batches: Iterable[tuple[Tensor, Tensor]], count: int) -> Tensor:
    taken: list[Tensor] = []
    for images, _ in batches:
        taken.append(images[: count - sum(len(t) for t in taken)])
        if sum(len(t) for t in taken) >= count:
            break
    return torch.cat(taken)


def evaluate_run(
    run: str | Path,
    *,
    weights: str | Path | None = None,
    data_dir: str | None = None,
    batch_size: int | None = None,
    latency_inputs: int = 200,
    device: str | None = None,
    output: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a trained run as an anytime predictor and write ``eval.json`` (per-stage top-1/top-5
    error, parameters, FLOPs, median latency) and ``eval_outputs.safetensors`` (per-input
    correctness ``correct`` [stages, inputs] and finish times ``finish_s`` [stages, latency_inputs],
    for the deadline simulation) to ``output`` (default: the run folder)."""
    from .cost import model_costs
    from .data import InMemoryLoader
    from .data.stream import attach_transforms, stream_loader
    from .train.checkpoint import MODEL_FILE, load_weights
    from .train.config import TrainConfig
    from .train.environment import environment_report
    from .train.loaders import DeviceLoader, load_sources
    from .train.trainer import create_model

    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise FileNotFoundError(f"{run} is not a run folder (no config.yaml): pass the --output of anytime-train")
    cfg = TrainConfig.load(run / "config.yaml")
    if data_dir is not None:
        cfg.data_dir = data_dir
        cfg.validate()
    if weights is None:
        weights = run / MODEL_FILE if (run / MODEL_FILE).is_file() else run / "checkpoint" / MODEL_FILE
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sources = load_sources(cfg, progress=progress, train=False)
    model = create_model(cfg, sources.num_classes, sources.in_chans)
    metadata = load_weights(weights, model)
    model.to(target).eval()
    size = batch_size or cfg.eval_batch_size
    if sources.spec is not None:
        spec = sources.spec
        loader = InMemoryLoader(sources.evaluation, size, train=False, mean=spec.mean, std=spec.std, device=target)
        input_size = (spec.in_chans, spec.image_size, spec.image_size)
    else:
        config = attach_transforms(None, sources.evaluation, model)
        loader = DeviceLoader(stream_loader(sources.evaluation, size, train=False, workers=cfg.workers), target)
        input_size = tuple(config["input_size"])
    top1, top5 = stage_correct(model, loader)
    costs = model_costs(model, input_size)
    finish = stage_finish_times(model, _first_images(loader, min(latency_inputs, top1.shape[1])))
    stages = [
        {
            "stage": cost.stage,
            "top1_err": round(100 * (1 - float(top1[k].double().mean())), 4),
            "top5_err": round(100 * (1 - float(top5[k].double().mean())), 4),
            "params": cost.params,
            "flops": cost.flops,
            "anytime_flops": cost.anytime_flops,
            "latency_ms": round(1000 * float(finish[k].median()), 4),
        }
        for k, cost in enumerate(costs)
    ]
    environment = environment_report(1, str(target))
    result = {
        "run": str(run),
        "label": cfg.label,
        "model": cfg.model,
        "model_kwargs": cfg.model_kwargs,
        "method": cfg.method,
        "priority": cfg.priority,
        "seed": cfg.seed,
        "dataset": cfg.dataset,
        "num_classes": sources.num_classes,
        "eval_inputs": int(top1.shape[1]),
        "latency_inputs": int(finish.shape[1]),
        "weights": str(weights),
        "epoch": metadata.get("epoch"),
        "device": str(target),
        "hardware": environment["gpus"][0] if target.type == "cuda" else environment["cpu"],
        "torch_threads": torch.get_num_threads(),
        "stages": stages,
    }
    out = Path(output) if output is not None else run
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    save_file({"correct": top1.to(torch.uint8), "finish_s": finish}, str(out / "eval_outputs.safetensors"))
    return result


def format_stages(result: dict[str, Any]) -> str:
    """A printable table of :func:`evaluate_run`'s per-stage results."""
    lines = [
        f"{result['label']} ({result['model']}, {result['eval_inputs']} inputs, latency on {result['hardware']})",
        f"{'stage':>5} {'top-1 err':>9} {'top-5 err':>9} {'params (M)':>10} {'MFLOPs':>9} {'latency ms':>10}",
    ]
    for s in result["stages"]:
        lines.append(
            f"{s['stage']:>5} {s['top1_err']:>9.2f} {s['top5_err']:>9.2f} {s['params'] / 1e6:>10.3f} "
            f"{s['flops'] / 1e6:>9.2f} {s['latency_ms']:>10.3f}"
        )
    return "\n".join(lines)
