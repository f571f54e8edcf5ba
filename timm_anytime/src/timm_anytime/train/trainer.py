"""The training loop behind ``anytime-train``: one device or many through Accelerate.

A run folder holds ``config.yaml`` (every setting), ``environment.jsonl`` (one record per start
or resume), ``metrics.jsonl`` (one line per epoch), ``checkpoint/`` (the latest epoch's weights
and optimizer, scheduler and RNG state, for ``--resume``) and, when training ends,
``model.safetensors`` (plus ``model_ema.safetensors``, the averaged weights, with ``--model-ema``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import random
import shutil
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import set_seed
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, dispatch_clip_grad
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm import tqdm

from osgd import OSGD

from .. import __version__
from ..cpu_allocator import apply_cpu_allocator
from ..evaluate import stage_correct
from ..learning_curves import metrics_through
from ..models.anytime import AnytimeModel, is_anytime_model, num_stages_of, stage_logits
from ..models.pretrained import SHIPPED
from ..run_files import append_record, atomic_copy, atomic_write_text
from .batch_augment import build_mixup, build_random_erasing, dominant_labels, mixup_active
from .checkpoint import EMA_FILE, MODEL_FILE, load_state, load_weights, recover_checkpoint, save_checkpoint
from .config import TrainConfig, saved_run_config
from .environment import ENVIRONMENT_FILE, environment_report, run_starts
from .initial_weights import load_initial_checkpoint, pretrained_record
from .loaders import Sources, load_sources, make_loaders
from .methods import TABLE, Combined, Phase, RuleInputs, build_update_rule, plan_phases
from .stage_passes import (
    check_compile_support,
    compile_options,
    compiled_backward_settings,
    resolve_stage_passes,
    separate_stage_losses,
)

#: Settings that may change when a run is resumed (they do not change what is computed).
#: Speed and memory settings (stage_passes, channels_last, compile, grad_checkpointing) change float
#: rounding at most; cpu_allocator changes nothing computed.
RESUMABLE = frozenset(
    {
        "resume",
        "overwrite",
        "progress",
        "log_with",
        "eval_every",
        "workers",
        "eval_batch_size",
        "output",
        "name",
        "stage_passes",
        "channels_last",
        "compile",
        "grad_checkpointing",
        "cpu_allocator",
    }
)
LOG_EVERY = 10  # steps between progress updates (each reads the losses back from the device)


class NonFiniteLossError(FloatingPointError):
    """A stage's training loss became NaN or infinite."""


class StageOutputs(nn.Module):
    """What DistributedDataParallel wraps: every stage's logits, or the active stage's alone."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, only_active: bool = False) -> list[Tensor]:
        return [self.model(x)] if only_active else stage_logits(self.model, x)


def create_model(cfg: TrainConfig, num_classes: int, in_chans: int, pretrained: bool = False) -> nn.Module:
    """``timm.create_model`` with the dataset's classes and channels (``cfg`` has checked the name),
    with the model's pretrained weights if ``pretrained``."""
    try:
        return timm.create_model(
            cfg.model, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **cfg.model_kwargs
        )
    except RuntimeError as error:
        if pretrained and "pretrained" in str(error):
            raise ValueError(f"--pretrained: {error} This package ships: {', '.join(SHIPPED)}") from error
        raise


def _cpu_processes() -> bool:
    """Several processes but no GPU (``accelerate launch --multi_gpu`` on a CPU machine): Accelerate
    only sets up CPU data parallelism (gloo) when told to use the CPU."""
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),  # noqa: NPY002 (the global RNG that user code may draw from)
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _differences(saved: TrainConfig, given: TrainConfig) -> list[str]:
    return [
        f"{f.name}: {getattr(saved, f.name)!r} -> {getattr(given, f.name)!r}"
        for f in fields(TrainConfig)
        if f.name not in RESUMABLE and getattr(saved, f.name) != getattr(given, f.name)
    ]


def _data_record(cfg: TrainConfig, sources: Sources) -> dict[str, Any]:
    """Which images the run trains and evaluates on (environment.jsonl)."""
    subset = (
        "first N images of each class (ImageFolder trees: in sorted file-name order; digits and "
        "torchvision CIFAR: in dataset order)"
    )
    held_out = None
    if sources.validation is not None:
        first, count = cfg.train_per_class, cfg.val_per_class
        assert first is not None  # TrainConfig.validate: val_per_class comes with train_per_class
        assert count is not None
        held_out = (
            f"training images {first} to {first + count - 1} of each class "
            "(0-based, same order as the training subset): never trained on"
        )
    return {
        "dataset": cfg.dataset,
        "data_dir": None if cfg.data_dir is None else str(Path(cfg.data_dir).resolve()),
        "train_images": None if sources.train is None else len(sources.train),
        "eval_images": len(sources.evaluation),
        "train_per_class": cfg.train_per_class,
        "eval_per_class": cfg.eval_per_class,
        "selection": subset if cfg.train_per_class or cfg.eval_per_class else "all images",
        "val_images": None if sources.validation is None else len(sources.validation),
        "val_per_class": cfg.val_per_class,
        "val_selection": held_out,
    }


class Trainer:
    """Train ``cfg.model`` with ``cfg.method``; ``fit()`` returns the run folder."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.output)
        # Each stage's training loss; with mixup/cutmix, timm's Mixup smooths the (soft) targets instead.
        mixing = cfg.mixup > 0 or cfg.cutmix > 0
        self._loss = functools.partial(F.cross_entropy, label_smoothing=0.0 if mixing else cfg.smoothing)
        ddp = DistributedDataParallelKwargs(find_unused_parameters=TABLE[cfg.method].staged)
        self.accelerator = Accelerator(
            cpu=cfg.cpu or _cpu_processes(),
            mixed_precision=cfg.resolved_precision(),
            log_with=cfg.log_with or None,
            project_dir=str(self.out),
            kwargs_handlers=[ddp],
        )
        self.is_main = self.accelerator.is_main_process
        # Process-wide: before the data and the model take their memory (CPU runs only).
        self.cpu_allocator = apply_cpu_allocator(cfg.cpu_allocator) if self.accelerator.device.type == "cpu" else None
        enabled = {str(getattr(t, "value", t)) for t in self.accelerator.log_with}
        missing = [name for name in cfg.log_with if name not in enabled]
        if missing:  # Accelerate only warns and drops them
            raise ValueError(
                f"tracker(s) {missing} are not installed (or unknown to Accelerate): pip install {' '.join(missing)}"
            )
        self._check_folder()
        set_seed(cfg.seed)
        sources: Sources = load_sources(cfg, progress=cfg.progress and self.is_main)
        # A resume continues from its own checkpoint: it needs neither the pretrained weights nor the initial file.
        starting = not (cfg.resume and (self.out / "checkpoint").is_dir())
        self.model = create_model(cfg, sources.num_classes, sources.in_chans, pretrained=cfg.pretrained and starting)
        self.initial_weights = self._load_initial_weights() if starting else None  # before the folder is written
        self.num_stages = num_stages_of(self.model)
        # self.model again, typed by its anytime members; None for a one-stage network.
        self._anytime: AnytimeModel | None = self.model if is_anytime_model(self.model) else None
        self._check_stage_settings()
        self.stage_passes = resolve_stage_passes(cfg.stage_passes, cfg.method, self.model, cfg.grad_checkpointing)
        if cfg.compile:
            check_compile_support(cfg.method, self.stage_passes)
        if cfg.grad_checkpointing:  # timm's model API, which nn.Module's type does not declare
            self.model.set_grad_checkpointing(True)  # type: ignore[operator]
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.loaders = make_loaders(cfg, sources, self.model, self.accelerator)
        self.random_erasing = build_random_erasing(cfg, self.accelerator.device)
        self.mixup = build_mixup(cfg, sources.num_classes)
        if self.mixup is not None and (cfg.batch_size // self.accelerator.num_processes) % 2:
            raise ValueError(
                f"mixup/cutmix pair the images of each process's batch: batch_size / processes = "
                f"{cfg.batch_size} / {self.accelerator.num_processes} must be even"
            )
        self.phases = plan_phases(cfg.method, cfg.epochs, self.num_stages)
        self.start_epoch, self.global_step, resumed = 0, 0, None
        # Loaded before the start is recorded (it records the epoch): a corrupt checkpoint stops here.
        if not starting:  # a resume with a checkpoint (decided above, before the model was built)
            load_weights(self.out / "checkpoint", self.model)
            resumed = load_state(self.out / "checkpoint")
            self.start_epoch, self.global_step = int(resumed["epoch"]), int(resumed["global_step"])
        self._write_folder(sources)  # only once every setting has been checked
        outputs = StageOutputs(self.model)
        if cfg.compile:  # compiles StageOutputs' call in place: the model's state dict keys are unchanged
            outputs.compile(options=compile_options(cfg.method, self.stage_passes))
        self.wrapper = self.accelerator.prepare(outputs)
        # After prepare (which moves the model to its device), of the bare model (not the DDP wrapper).
        self.ema: ModelEmaV3 | None = None
        if cfg.model_ema:
            self.ema = ModelEmaV3(self.model, decay=cfg.model_ema_decay, use_warmup=cfg.model_ema_warmup)
            if resumed is not None:
                load_weights(self.out / "checkpoint" / EMA_FILE, self.ema.module)
        self.phase: Phase | None = None
        if resumed is not None and self.start_epoch < cfg.epochs:
            phase = self._phase_of(self.start_epoch)
            self._start_phase(phase)
            if resumed["phase_first_epoch"] == phase.first_epoch:
                self.optimizer.load_state_dict(resumed["optimizer"])
                self.scheduler.load_state_dict(resumed["scheduler"])
                self.rule.load_state_dict(resumed["rule"])
            _set_rng_state(resumed["rng"])
        if cfg.resume:  # with no checkpoint yet (killed before the first save) that is every line
            self._truncate_metrics(self.start_epoch)

    # ------------------------------------------------------------------ setup
    def _check_folder(self) -> None:
        """Refuse to reuse another run's folder, or to resume with settings that change the run."""
        cfg, out = self.cfg, self.out
        if cfg.resume:
            if self.is_main and recover_checkpoint(out / "checkpoint"):
                tqdm.write(f"{out / 'checkpoint'}: a save was cut off; resuming from the checkpoint before it")
            self.accelerator.wait_for_everyone()
            changed = _differences(TrainConfig.load(saved_run_config(out)), cfg)
            if changed:
                raise ValueError(
                    f"--resume: these settings differ from the run in {out}: {'; '.join(changed)}. "
                    "Resume with the same settings, or start a new run in another --output."
                )
        elif out.exists() and any(out.iterdir()) and not cfg.overwrite:
            raise FileExistsError(
                f"{out} already holds a run: pass --resume to continue it, --overwrite to replace it, or "
                "choose another --output"
            )

    def _write_folder(self, sources: Sources) -> None:
        cfg, out = self.cfg, self.out
        if self.is_main and not cfg.resume and cfg.overwrite and out.exists():
            shutil.rmtree(out)
        self.accelerator.wait_for_everyone()
        if self.is_main:
            out.mkdir(parents=True, exist_ok=True)
            # A resume may change only display settings (RESUMABLE: name, eval_every, ...): record them.
            dataclasses.replace(cfg, resume=False).save(out / "config.yaml")
            report = environment_report(
                self.accelerator.num_processes, str(self.accelerator.device), self.accelerator.mixed_precision
            )
            report["data"] = _data_record(cfg, sources)
            if self.initial_weights is not None:
                report["initial_weights"] = self.initial_weights
            report["stage_passes"] = self.stage_passes
            report["cpu_allocator"] = self.cpu_allocator
            report["start_epoch"] = self.start_epoch  # epochs already trained: 0, or the checkpoint's epoch
            starts = run_starts(out) if cfg.resume else []
            previous = starts[-1].get("git_commit") if starts else None  # the latest start's
            if previous is not None and previous != report["git_commit"]:
                report["resumed_across_commits"] = {"from": previous, "to": report["git_commit"]}
                tqdm.write(
                    f"warning: resuming {out}, started at commit {previous}, under commit {report['git_commit']}: "
                    "recorded in environment.jsonl"
                )
            append_record(out / ENVIRONMENT_FILE, report)
        self.accelerator.wait_for_everyone()

    def _load_initial_weights(self) -> dict[str, Any] | None:
        """Load ``initial_checkpoint`` into the new model; returns what the run starts from (that file,
        or the pretrained weights ``create_model`` loaded), for environment.jsonl."""
        cfg = self.cfg
        if cfg.initial_checkpoint is not None:
            return load_initial_checkpoint(cfg.initial_checkpoint, self.model)
        if cfg.pretrained:
            return pretrained_record(self.model)
        return None

    def _check_stage_settings(self) -> None:
        cfg, n = self.cfg, self.num_stages
        for name in ("priority", "stage_weights"):
            value = getattr(cfg, name)
            if value is not None and len(value) != n:
                raise ValueError(
                    f"{name} has {len(value)} entries, but {cfg.model} has {n} stage(s): give one per stage"
                )

    def _phase_of(self, epoch: int) -> Phase:
        return next(p for p in self.phases if p.first_epoch <= epoch < p.end_epoch)

    def _start_phase(self, phase: Phase) -> None:
        cfg = self.cfg
        inner = create_optimizer_v2(
            self.model, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum
        )
        optimizer: torch.optim.Optimizer = inner
        osgd_method = TABLE[cfg.method].osgd
        if osgd_method is not None and phase.stage is None:
            optimizer = OSGD(
                inner,
                osgd_method,
                priority=None if cfg.priority is None else [p - 1 for p in cfg.priority],
                norm_scale=cfg.norm_scale,
                reduction=cfg.reduction,
                reach_masks=None if self._anytime is None else self._anytime.osgd_reach_masks(),
            )
        self.scheduler, _ = create_scheduler_v2(
            optimizer,
            sched=cfg.sched,
            num_epochs=phase.num_epochs,
            # timm's multistep decays from epoch index t once t + 1 reaches a milestone, one epoch before
            # the documented "after m epochs": shift by one so that epochs 0..m-1 use the full rate.
            decay_milestones=[m + 1 for m in cfg.milestones(phase.num_epochs)],
            decay_rate=cfg.decay_rate,
            warmup_epochs=cfg.warmup_epochs,
            warmup_lr=cfg.warmup_lr,
        )
        self.rule = build_update_rule(
            cfg.method, phase, RuleInputs(self.accelerator, self.model, optimizer, cfg.stage_weights)
        )
        self.optimizer = self.accelerator.prepare_optimizer(optimizer)
        self.phase = phase

    # ------------------------------------------------------------------ loop
    def fit(self) -> Path:
        cfg = self.cfg
        if self.start_epoch >= cfg.epochs:
            self.accelerator.print(f"{self.out} has already finished its {cfg.epochs} epochs")
        if cfg.log_with:
            self.accelerator.init_trackers(self.out.name, config={k: str(v) for k, v in cfg.to_dict().items()})
        with compiled_backward_settings(cfg.compile, cfg.method, self.stage_passes):
            for epoch in range(self.start_epoch, cfg.epochs):
                phase = self._phase_of(epoch)
                if phase != self.phase:
                    self._start_phase(phase)
                started = time.perf_counter()
                record = self._train_epoch(epoch, phase)
                self.scheduler.step(epoch + 1 - phase.first_epoch)
                if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                    record.update(self.evaluate())
                record["seconds"] = round(time.perf_counter() - started, 3)
                self._log(record)
                self._save_checkpoint(epoch + 1)
        if self._anytime is not None:
            self._anytime.set_active_stage(self.num_stages)
        if self.is_main:  # the final model.safetensors marks the run as finished: it comes last, whole
            for file in (EMA_FILE, MODEL_FILE) if self.ema is not None else (MODEL_FILE,):
                atomic_copy(self.out / "checkpoint" / file, self.out / file)
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()
        return self.out

    def _train_epoch(self, epoch: int, phase: Phase) -> dict[str, Any]:
        cfg, accelerator = self.cfg, self.accelerator
        loader = self.loaders.train
        loader.set_epoch(epoch)
        self.wrapper.train()
        only_active = phase.stage is not None
        if phase.stage is not None:
            self._select_stage(phase.stage)
        outputs = 1 if only_active else self.num_stages
        device = accelerator.device
        loss_sum = torch.zeros(outputs, device=device, dtype=torch.float64)
        correct = torch.zeros(outputs, device=device, dtype=torch.float64)
        seen = 0
        stage_note = f" stage {phase.stage}" if only_active else ""
        if self.mixup is not None:
            self.mixup.mixup_enabled = mixup_active(cfg, epoch)
        bar = tqdm(
            total=len(loader),
            desc=f"epoch {epoch + 1}/{cfg.epochs}{stage_note}",
            disable=not (cfg.progress and self.is_main),
            leave=False,
            dynamic_ncols=True,
        )
        for index, (images, labels) in enumerate(loader):
            self.optimizer.zero_grad()
            if self.random_erasing is not None:  # in place, on the normalized images (timm's order: then mixup)
                images = self.random_erasing(images)
            if self.mixup is not None:  # soft targets [B, classes] from here on
                images, labels = self.mixup(images, labels)
            micro = list(zip(images.chunk(cfg.grad_accum), labels.chunk(cfg.grad_accum), strict=True))
            for j, (x, y) in enumerate(micro):
                last = j == len(micro) - 1
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with self.rule.sync_context(self.wrapper, last):
                    if self.stage_passes == "separate" and not only_active:
                        logits, losses = self._separate_backward(x, y, len(micro), last)
                    else:
                        with accelerator.autocast():
                            logits = self.wrapper(x, only_active=only_active)
                        losses = [self._loss(z.float(), y) for z in logits]
                        self.rule.backward([loss / len(micro) for loss in losses], last)
                with torch.no_grad():
                    loss_sum += torch.stack(losses).double() * len(y)
                    named = dominant_labels(y)
                    correct += torch.stack([(z.argmax(-1) == named).sum() for z in logits]).double()
                seen += len(y)
            if cfg.clip_grad is not None:
                self.accelerator.unscale_gradients(self.optimizer)  # float16's GradScaler: clip the true gradient
                dispatch_clip_grad(self.model.parameters(), cfg.clip_grad, mode=cfg.clip_mode)
            self.optimizer.step()
            self.rule.after_step()
            self.global_step += 1
            if self.ema is not None:
                self.ema.update(self.model, step=self.global_step)
            if (index + 1) % LOG_EVERY == 0 or index + 1 == len(loader):
                mean_loss = (loss_sum / seen).tolist()
                if not all(math.isfinite(v) for v in mean_loss):
                    raise NonFiniteLossError(
                        f"training loss per stage became {mean_loss} at epoch {epoch + 1}, step {index + 1}: "
                        "lower --lr, use --precision no (or bf16), or check the data. The checkpoint in "
                        f"{self.out / 'checkpoint'} (if any) is intact: fix the cause, then --resume."
                    )
                accuracy = (correct / seen * 100).tolist()
                bar.set_postfix_str(
                    "loss " + "/".join(f"{v:.3f}" for v in mean_loss) + " acc " + "/".join(f"{a:.1f}" for a in accuracy)
                )
            bar.update()
        bar.close()
        totals = accelerator.reduce(torch.cat([loss_sum, correct, loss_sum.new_tensor([seen])]), "sum")
        count = float(totals[-1])
        record = {
            "epoch": epoch + 1,
            "step": self.global_step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": [round(float(v) / count, 6) for v in totals[:outputs]],
            "train_top1_err": [round(100 - 100 * float(v) / count, 4) for v in totals[outputs:-1]],
        }
        if only_active:
            record["greedy_stage"] = phase.stage
        return record

    def _separate_backward(
        self, x: Tensor, y: Tensor, micro_batches: int, last: bool
    ) -> tuple[list[Tensor], list[Tensor]]:
        """The per-stage backward passes from one forward of each D_k (``stage_passes='separate'``).
        Returns every stage's logits and loss, detached (for the training metrics)."""
        logits: list[Tensor] = [x.new_empty(0)] * self.num_stages
        losses: list[Tensor] = [x.new_empty(0)] * self.num_stages

        def forward_stage(stage: int) -> Tensor:
            self._select_stage(stage)
            with self.accelerator.autocast():
                return self.wrapper(x, only_active=True)[0]

        def loss_of(stage: int, z: Tensor) -> Tensor:
            loss = self._loss(z.float(), y)
            logits[stage - 1], losses[stage - 1] = z.detach(), loss.detach()
            return loss / micro_batches

        if not isinstance(self.rule, Combined):  # resolve_stage_passes chooses separate passes for these only
            raise RuntimeError(f"separate stage passes need a per-stage method (osgd, normsgd), not {self.cfg.method}")
        try:
            self.rule.backward(separate_stage_losses(self.model, forward_stage, loss_of), last)
        finally:
            self._select_stage(self.num_stages)
        return logits, losses

    def _select_stage(self, stage: int) -> None:
        """``set_active_stage(stage)``, which only anytime models reach (greedy's phases and the
        separate stage passes are refused for one-stage networks before training starts)."""
        if self._anytime is None:
            raise RuntimeError(f"{self.cfg.model} has one stage: it has no stage {stage} to select")
        self._anytime.set_active_stage(stage)

    def evaluate(self) -> dict[str, Any]:
        """Per-stage top-1/top-5 error (%) on the evaluation set (``eval_*``) and, with
        ``val_per_class``, on the held-out validation images (``val_*``), over all processes; with
        ``model_ema``, the same for the averaged weights (``ema_eval_*``, ``ema_val_*``)."""
        models = {"": self.model, **({"ema_": self.ema.module} if self.ema is not None else {})}
        record: dict[str, Any] = {}
        for prefix, model in models.items():
            record.update(self._errors(model, self.loaders.evaluation, prefix + "eval"))
            if self.loaders.validation is not None:
                record.update(self._errors(model, self.loaders.validation, prefix + "val"))
        return record

    def _errors(self, model: nn.Module, batches: Any, prefix: str) -> dict[str, Any]:
        top1, top5 = stage_correct(model, batches, autocast=self.accelerator.autocast)
        counts = torch.tensor(
            [*top1.sum(1).tolist(), *top5.sum(1).tolist(), top1.shape[1]],
            dtype=torch.float64,
            device=self.accelerator.device,
        )
        counts = self.accelerator.reduce(counts, "sum")
        n, total = self.num_stages, float(counts[-1])
        return {
            f"{prefix}_top1_err": [round(100 - 100 * float(c) / total, 4) for c in counts[:n]],
            f"{prefix}_top5_err": [round(100 - 100 * float(c) / total, 4) for c in counts[n : 2 * n]],
        }

    # ------------------------------------------------------------------ records
    def _log(self, record: dict[str, Any]) -> None:
        if self.is_main:
            append_record(self.out / "metrics.jsonl", record)
            summary = " ".join(
                f"{key} {'/'.join(f'{v:.2f}' for v in value)}"
                for key, value in record.items()
                if isinstance(value, list)
            )
            tqdm.write(f"epoch {record['epoch']}/{self.cfg.epochs}: {summary} ({record['seconds']:.1f} s)")
        if self.cfg.log_with:
            scalars = {}
            for key, value in record.items():
                if isinstance(value, list):
                    scalars.update({f"{key}/stage{s + 1}": v for s, v in enumerate(value)})
                elif isinstance(value, int | float):
                    scalars[key] = value
            self.accelerator.log(scalars, step=record["epoch"])

    def _save_checkpoint(self, epoch: int) -> None:
        assert self.phase is not None
        state = {
            "epoch": epoch,
            "global_step": self.global_step,
            "phase_first_epoch": self.phase.first_epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rule": self.rule.state_dict(),
            "rng": _rng_state(),
        }
        if self.is_main:
            metadata = {"format": "pt", "model": self.cfg.model, "timm_anytime": __version__, "epoch": str(epoch)}
            save_checkpoint(
                self.out / "checkpoint", self.model, state, metadata, ema=None if self.ema is None else self.ema.module
            )
        self.accelerator.wait_for_everyone()

    def _truncate_metrics(self, epochs_done: int) -> None:
        """Drop log lines of epochs after the checkpoint (logged, then interrupted before saving)."""
        path = self.out / "metrics.jsonl"
        if not self.is_main or not path.is_file():
            return
        atomic_write_text(path, metrics_through(path, epochs_done))  # a kill here must not lose the log


def train(cfg: TrainConfig) -> Path:
    """Train as configured; returns the run folder."""
    return Trainer(cfg).fit()
