"""Evaluating a run folder of ``anytime-train`` as an anytime predictor: ``eval.json`` and
``eval_outputs.safetensors``, optionally with the early-exit budget curve."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from timm.data import ImageDataset
from torch import Tensor

from .cost import model_costs
from .cpu_allocator import apply_cpu_allocator
from .data import load_held_out
from .data.stream import attach_transforms
from .evaluate import stage_finish_times, stage_outcomes
from .inference.early_exit import budget_curve, default_budgets, relative_costs, score_function, stage_scores
from .models.anytime import is_anytime_model
from .models.pretrained import EXPORTED_TRAIN_CONFIG, SHIPPED, WEIGHTS_DIR
from .train.checkpoint import load_weights, run_weights
from .train.config import TrainConfig
from .train.environment import environment_report
from .train.loaders import evaluation_loader, load_sources
from .train.trainer import create_model

#: How timm names a Hugging Face Hub repository in ``create_model``; ``anytime-eval`` takes it too
HF_HUB_PREFIX = "hf-hub:"

#: Held-out training images per class that calibrate the early-exit thresholds by default
CALIBRATION_PER_CLASS = 500


def _where(path: Path, run: Path) -> str:
    """``path`` relative to the run folder when inside it (the record survives moving the folder),
    else absolute: ``anytime-push`` publishes the weights that ``eval.json`` measured."""
    resolved = path.resolve()
    return str(resolved.relative_to(run.resolve())) if resolved.is_relative_to(run.resolve()) else str(resolved)


def _first_images(batches: Iterable[tuple[Tensor, Tensor]], count: int) -> Tensor:
    taken: list[Tensor] = []
    for images, _ in batches:
        taken.append(images[: count - sum(len(t) for t in taken)])
        if sum(len(t) for t in taken) >= count:
            break
    return torch.cat(taken)


def resolve_run(run: str | Path) -> Path:
    """The folder ``anytime-eval`` reads: ``run`` itself; for the name of a shipped checkpoint
    (``architecture.tag``, :data:`~timm_anytime.models.pretrained.SHIPPED`) the folder it ships in;
    for ``hf-hub:ORG/NAME[@REVISION]`` the repository's snapshot in the Hugging Face cache
    (``huggingface_hub.snapshot_download``: downloaded once, offline from the cache after)."""
    if str(run).startswith(HF_HUB_PREFIX):
        from huggingface_hub import snapshot_download

        repo_id, _, revision = str(run)[len(HF_HUB_PREFIX) :].partition("@")
        return Path(snapshot_download(repo_id, revision=revision or None))
    if Path(run).exists():
        return Path(run)
    if str(run) in SHIPPED:
        return WEIGHTS_DIR / str(run)
    raise FileNotFoundError(
        f"{run} does not exist: pass a run folder of anytime-train, a checkpoint folder of anytime-push, "
        f"hf-hub:ORG/NAME, or a shipped checkpoint ({', '.join(SHIPPED)})"
    )


def is_exported(folder: Path) -> bool:
    """Whether ``folder`` is a checkpoint folder written by ``anytime-push`` (or shipped), not a run."""
    return not (folder / "config.yaml").is_file() and (folder / EXPORTED_TRAIN_CONFIG).is_file()


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
    early_exit: bool = False,
    calibration_per_class: int = CALIBRATION_PER_CLASS,
    budgets: Sequence[float] | None = None,
    score: str = "max_softmax",
    cpu_allocator: str = "tuned",
) -> dict[str, Any]:
    """Evaluate a trained run as an anytime predictor and write ``eval.json`` (per-stage top-1/top-5
    error, parameters, FLOPs, median latency) and ``eval_outputs.safetensors`` (per-input
    correctness ``correct`` [stages, inputs] and finish times ``finish_s`` [stages, latency_inputs],
    for the deadline simulation) to ``output`` (default: the run folder).

    ``run`` may also be a checkpoint folder written by ``anytime-push``, ``hf-hub:ORG/NAME`` or the
    name of a shipped checkpoint (:func:`resolve_run`): its ``train_config.yaml`` gives the data and
    its ``model.safetensors`` the weights.
    Its ``eval.json`` is what its model card reports, so ``output`` is then required.

    ``early_exit``: also the budgeted curve of :class:`~timm_anytime.inference.EarlyExit` (error
    against average cost at each of ``budgets``, default: a grid from stage 1's cost to 1 and every
    stage's cost), thresholds calibrated on ``calibration_per_class`` training images per class that
    the run never trained on (never on the test split), under ``eval.json["early_exit"]``.

    ``cpu_allocator`` (on the CPU): the C allocator setting of ``anytime-train`` and the benchmarks
    (:mod:`timm_anytime.cpu_allocator`; process-wide), so the latencies compare with theirs; the
    setting in effect is recorded as ``eval.json["cpu_allocator"]`` (None on a GPU)."""
    run = resolve_run(run)
    if output is None and is_exported(run):
        raise ValueError(
            f"{run} is a checkpoint folder of anytime-push: its eval.json is what its model card reports, "
            "so it is not overwritten. Pass --output DIR (output=...) for the new measurement."
        )
    cfg = TrainConfig.from_run(run, data_dir)
    weights = run_weights(run) if weights is None else Path(weights)
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    allocator = apply_cpu_allocator(cpu_allocator) if target.type == "cpu" else None
    if early_exit:
        score_fn = score_function(score)
        wrong = [b for b in budgets or () if not 0 < b <= 1]
        if wrong:  # checked again against stage 1's cost once the model exists
            raise ValueError(f"budgets {wrong} are not fractions of the cost of every stage in (0, 1]")
        calibration = _held_out(cfg, calibration_per_class, progress)
    sources = load_sources(cfg, progress=progress, train=False)
    model = create_model(cfg, sources.num_classes, sources.in_chans)
    if early_exit and not is_anytime_model(model):
        raise ValueError(f"{cfg.model} has one stage: early exit needs an anytime model; drop --early-exit")
    metadata = load_weights(weights, model)
    model.to(target).eval()
    size = batch_size or cfg.eval_batch_size
    if sources.spec is not None:
        spec = sources.spec
        input_size = (spec.in_chans, spec.image_size, spec.image_size)
    else:
        assert isinstance(sources.evaluation, ImageDataset)  # a streamed folder: no spec
        input_size = tuple(attach_transforms(None, sources.evaluation, model)["input_size"])
    loader = evaluation_loader(sources.evaluation, size, target, spec=sources.spec, workers=cfg.workers)
    top1, top5, scores = stage_outcomes(model, loader, score=score_fn if early_exit else None)
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
        "weights": _where(weights, run),
        "ema_weights": metadata.get("weights") == "ema",  # anytime-train --model-ema's model_ema.safetensors
        "epoch": metadata.get("epoch"),
        "device": str(target),
        "hardware": environment["gpus"][0] if target.type == "cuda" else environment["cpu"],
        "torch_threads": torch.get_num_threads(),
        "cpu_allocator": allocator,
        "stages": stages,
    }
    if early_exit:
        assert scores is not None
        held_out = evaluation_loader(calibration, size, target, spec=sources.spec)
        calibration_scores, _, _ = stage_scores(model, held_out, score_fn)
        relative = relative_costs(costs)
        chosen = sorted(budgets) if budgets is not None else default_budgets(relative)
        result["early_exit"] = {
            "score": score,
            "stage_costs": relative,
            "calibration": {
                "split": "train",
                "after_first_per_class": cfg.train_per_class,
                "images_per_class": calibration_per_class,
                "inputs": len(calibration),
            },
            "points": budget_curve(calibration_scores, scores, top1, relative, chosen),
        }
    out = Path(output) if output is not None else run
    out.mkdir(parents=True, exist_ok=True)
    # Both files are written whole beside their final names, then renamed: an evaluation cut off while
    # it writes leaves the folder's earlier pair as it was. eval.json marks the evaluation as done
    # (anytime-push, the reproduction scripts), so it is renamed last; only a kill between the two
    # renames leaves new per-input results beside the old eval.json.
    outputs = out / "eval_outputs.safetensors.partial"
    save_file({"correct": top1.to(torch.uint8), "finish_s": finish}, str(outputs))
    summary = out / "eval.json.partial"
    summary.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(outputs, out / "eval_outputs.safetensors")
    os.replace(summary, out / "eval.json")
    return result


def _held_out(cfg: TrainConfig, per_class: int, progress: bool):
    """The training images a run never saw, for calibration (see ``data.load_held_out``)."""
    if cfg.train_per_class is None:
        raise ValueError(
            f"run trained on every training image of {cfg.dataset}, so none is held out to calibrate early exit "
            "on (the test split must not be used): train with --train-per-class N, or calibrate "
            "timm_anytime.inference.EarlyExit on your own validation loader"
        )
    if per_class < 1:
        raise ValueError(f"calibration images per class must be at least 1, got {per_class}")
    return load_held_out(
        cfg.dataset,
        cfg.data_dir,
        trained_per_class=cfg.train_per_class,
        per_class=per_class,
        download=cfg.download,
        progress=progress,
    )


def format_early_exit(result: dict[str, Any]) -> str:
    """A printable table of the early-exit curve of :func:`evaluate_run` (``early_exit=True``)."""
    info = result["early_exit"]
    lines = [
        f"early exit ({info['score']}), thresholds from {info['calibration']['inputs']} held-out training images",
        f"{'budget':>7} {'test cost':>9} {'top-1 err':>9}  exits per stage",
    ]
    for p in info["points"]:
        exits = " / ".join(f"{100 * f:.1f}%" for f in p["exit_fractions"])
        lines.append(f"{p['budget']:>7.3f} {p['test_cost']:>9.3f} {p['test_top1_err']:>9.2f}  {exits}")
    return "\n".join(lines)


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
