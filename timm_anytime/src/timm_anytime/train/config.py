"""The settings of one training run: defaults, YAML config files, command-line overrides."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
import yaml

from ..cpu_allocator import CPU_ALLOCATORS, add_cpu_allocator_argument
from ..models.pretrained import EXPORTED_TRAIN_CONFIG
from ..run_files import atomic_write_text
from .methods import OPTIONAL_SETTINGS, TABLE

DATASETS = ("digits", "cifar10", "cifar100", "imagefolder")
#: ``auto``: bf16 autocast when training on a CUDA GPU that supports it, full float32 otherwise.
PRECISIONS = ("auto", "no", "bf16", "fp16")
#: timm.utils.dispatch_clip_grad's modes: the global 2-norm, each element, or adaptive (AGC)
CLIP_MODES = ("norm", "value", "agc")
#: timm's Mixup modes: one mixing factor per batch, per pair of images, or per image (train/batch_augment.py).
MIXUP_MODES = ("batch", "pair", "elem")
#: timm's RandomErasing fills: zeros (the mean, after normalization), one random colour per box, random pixels.
ERASE_MODES = ("const", "rand", "pixel")
#: How the per-stage losses are computed (train/stage_passes.py): one full pass, or one pass per stage.
STAGE_PASSES = ("auto", "single", "separate")


def _check_model_name(name: str) -> None:
    """A clear error for a model name timm does not know, with the closest names (checked with the
    other settings, before any data is read)."""
    if timm.is_model(name):
        return
    from .. import list_models

    # first the names holding every part of the given one ("anytime_resnet20_w124" is the CIFAR
    # model, not the similar-looking "anytime_resnet50_w124"), then timm's closest spellings
    ours = list_models()
    parts = set(name.split("_"))
    containing = [model for model in ours if parts <= set(model.split("_"))]
    similar = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    close = list(dict.fromkeys(containing + similar))[:3]
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"unknown model {name!r}.{hint} This package registers: {', '.join(ours)} "
        "(any other timm model also works as a plain network)."
    )


def _check_auto_augment(policy: str, dataset: str) -> None:
    """A clear error for ``aa`` on an in-memory dataset, or a policy string timm cannot parse."""
    if dataset != "imagefolder":
        raise ValueError(
            f"aa (timm's auto-augment, PIL images) applies to a streamed ImageFolder tree, not to {dataset!r}, whose "
            "batches are augmented on the device: use --cutout, --reprob, --mixup or --cutmix there"
        )
    from timm.data import create_transform

    try:
        create_transform(32, is_training=True, auto_augment=policy)
    except (AssertionError, ValueError, KeyError) as error:
        raise ValueError(
            f"aa {policy!r} is not a timm auto-augment policy ({error}): e.g. rand-m9-mstd0.5-inc1 (RandAugment), "
            "augmix-m5-w4-d2 (AugMix) or original (AutoAugment)"
        ) from error


@dataclass
class TrainConfig:
    """Everything that defines a training run. Saved as ``config.yaml`` in the run folder.

    The defaults are the paper's CIFAR setting (SPEC section 8): SGD with momentum 0.9, 200 epochs,
    learning rate 0.1 multiplied by 0.2 at 30%, 60% and 80% of training (ending at 0.0008).
    """

    # model
    model: str = "anytime_cifar_resnet20_w124"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained: bool = False  # start from the model's pretrained weights (e.g. a shipped tag: <arch>.<tag>)
    initial_checkpoint: str | None = None  # start from this .safetensors file (or run folder) of the same model
    # data
    dataset: str = "cifar10"
    data_dir: str | None = None
    download: bool = False
    train_per_class: int | None = None
    eval_per_class: int | None = None
    val_per_class: int | None = None  # held-out training images per class, after the first train_per_class
    batch_size: int = 128
    grad_accum: int = 1
    eval_batch_size: int = 500
    workers: int = 4
    # regularization (off by default: the paper uses neither)
    smoothing: float = 0.0  # label smoothing of every stage's training loss (timm's --smoothing)
    cutout: int = 0  # side in pixels of the Cutout square per training image (in-memory datasets); 0: off
    aa: str | None = None  # timm's auto-augment policy, e.g. rand-m9-mstd0.5-inc1 (streamed ImageFolder only)
    reprob: float = 0.0  # probability of random erasing per training image (timm's --reprob); 0: off
    remode: str = "pixel"  # what fills an erased box: const | rand | pixel (timm's --remode)
    recount: int = 1  # at most this many erased boxes per image (timm's --recount)
    mixup: float = 0.0  # Beta(a, a) parameter of Mixup (timm's --mixup); 0: off
    cutmix: float = 0.0  # Beta(a, a) parameter of CutMix (timm's --cutmix); 0: off
    mixup_prob: float = 1.0  # probability that a batch (or pair, or image) is mixed at all
    mixup_switch_prob: float = 0.5  # with both mixup and cutmix on: probability of CutMix instead of Mixup
    mixup_mode: str = "batch"  # one mixing factor per batch, pair or image (timm's Mixup modes)
    mixup_off_epoch: int = 0  # stop mixing from this epoch on (0: never; timm's --mixup-off-epoch)
    # gradient clipping and weight averaging (off by default: the paper uses neither; timm's names)
    clip_grad: float | None = None  # clip each step's (combined) gradient at this norm or value
    clip_mode: str = "norm"  # norm | value | agc (timm.utils.dispatch_clip_grad)
    model_ema: bool = False  # also keep an exponential moving average of the weights (timm's ModelEmaV3)
    model_ema_decay: float = 0.9998
    model_ema_warmup: bool = False  # ramp the decay up from 0 (ModelEmaV3's use_warmup)
    # method
    method: str = "osgd"
    priority: list[int] | None = None
    stage_weights: list[float] | None = None
    norm_scale: float = 0.5
    reduction: str | None = None
    stage_passes: str = "auto"
    # optimizer and schedule (timm's create_optimizer_v2 / create_scheduler_v2)
    opt: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 200
    sched: str = "multistep"
    decay_milestones: list[int] | None = None
    decay_rate: float = 0.2
    warmup_epochs: int = 0
    warmup_lr: float = 1e-5  # timm's default: the lr of the first warmup epoch
    # run
    output: str = "runs/anytime"
    name: str | None = None
    seed: int = 0
    precision: str = "auto"
    channels_last: bool = False
    compile: bool = False
    grad_checkpointing: bool = False  # recompute activations in the backward pass (less memory, more time)
    cpu_allocator: str = "tuned"
    cpu: bool = False
    log_with: list[str] = field(default_factory=list)
    eval_every: int = 1
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.validate()

    @property
    def label(self) -> str:
        """How reports name this run: ``name``, else ``<method>`` (plus the priority if set)."""
        if self.name:
            return self.name
        return self.method if self.priority is None else f"{self.method} p{''.join(map(str, self.priority))}"

    def milestones(self, num_epochs: int) -> list[int]:
        """Epochs at which the multistep schedule decays: ``decay_milestones``, else 30%, 60% and 80%
        of ``num_epochs`` (a greedy run schedules each stage's share of the epochs on its own)."""
        if self.decay_milestones is not None:
            return list(self.decay_milestones)
        return sorted({max(1, round(num_epochs * f)) for f in (0.3, 0.6, 0.8)})

    def resolved_precision(self) -> str:
        """``precision`` with ``auto`` resolved for this machine (bf16 on a bf16-capable CUDA GPU)."""
        if self.precision != "auto":
            return self.precision
        on_gpu = not self.cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return "bf16" if on_gpu else "no"

    def validate(self) -> None:
        def choice(name: str, allowed: tuple[str, ...]) -> None:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")

        _check_model_name(self.model)
        choice("method", tuple(TABLE))
        choice("dataset", DATASETS)
        choice("precision", PRECISIONS)
        choice("stage_passes", STAGE_PASSES)
        choice("cpu_allocator", CPU_ALLOCATORS)
        choice("clip_mode", CLIP_MODES)
        choice("mixup_mode", MIXUP_MODES)
        choice("remode", ERASE_MODES)
        for name in ("batch_size", "grad_accum", "eval_batch_size", "epochs", "eval_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of grad_accum ({self.grad_accum}): "
                "batch_size is the global batch of one optimizer step"
            )
        if not 0 <= self.smoothing < 1:
            raise ValueError(f"smoothing must lie in [0, 1) (e.g. 0.1), got {self.smoothing!r}")
        if not isinstance(self.cutout, int) or self.cutout < 0:
            raise ValueError(f"cutout must be a square side in pixels (0: off; 16 for CIFAR), got {self.cutout!r}")
        if self.cutout and self.dataset == "imagefolder":
            raise ValueError(
                "cutout applies to the in-memory datasets (digits, cifar10, cifar100); a streamed ImageFolder tree "
                "is augmented by timm's create_transform: drop --cutout"
            )
        if self.grad_checkpointing and self.compile:
            raise ValueError(
                "grad_checkpointing and compile: torch.compile cannot run the recomputation that leaves BatchNorm's "
                "running statistics alone (layers/checkpointing.py), so checkpointing would change the trained "
                "state there: choose one"
            )
        if self.pretrained and self.initial_checkpoint is not None:
            raise ValueError(
                "pretrained loads the model's published weights and initial_checkpoint a file of yours: choose one"
            )
        if self.aa is not None:
            _check_auto_augment(self.aa, self.dataset)
        if not 0 <= self.reprob <= 1:
            raise ValueError(f"reprob is a probability in [0, 1] (e.g. 0.25), got {self.reprob!r}")
        if not isinstance(self.recount, int) or self.recount < 1:
            raise ValueError(f"recount must be a positive integer (boxes per image), got {self.recount!r}")
        for name in ("mixup", "cutmix"):
            if isinstance(getattr(self, name), bool) or not 0 <= getattr(self, name) < math.inf:
                raise ValueError(
                    f"{name} is the alpha of a Beta(alpha, alpha) distribution: 0 (off) or positive, e.g. 0.2 "
                    f"for mixup, 1.0 for cutmix; got {getattr(self, name)!r}"
                )
        for name in ("mixup_prob", "mixup_switch_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} is a probability in [0, 1], got {getattr(self, name)!r}")
        if not isinstance(self.mixup_off_epoch, int) or self.mixup_off_epoch < 0:
            raise ValueError(
                f"mixup_off_epoch must be an epoch number (0: mix in every epoch), got {self.mixup_off_epoch!r}"
            )
        if (self.mixup or self.cutmix) and self.batch_size % 2:
            raise ValueError(
                f"mixup/cutmix pair every image with another of its batch: batch_size must be even, got "
                f"{self.batch_size} (e.g. --batch-size {self.batch_size + 1})"
            )
        if self.clip_grad is not None and (isinstance(self.clip_grad, bool) or not 0 < self.clip_grad < math.inf):
            raise ValueError(
                "clip_grad must be a positive number (e.g. 1.0 with clip_mode norm; 0.01 with agc), "
                f"got {self.clip_grad!r}"
            )
        if not 0 < self.model_ema_decay < 1:
            raise ValueError(
                f"model_ema_decay must lie strictly between 0 and 1 (e.g. 0.9998: an average over about 5,000 "
                f"steps), got {self.model_ema_decay!r}"
            )
        if self.val_per_class is not None:
            if not isinstance(self.val_per_class, int) or self.val_per_class < 1:
                raise ValueError(f"val_per_class must be a positive integer, got {self.val_per_class!r}")
            if self.train_per_class is None:
                raise ValueError(
                    "val_per_class holds out the training images after the first train_per_class of each class: "
                    "set train_per_class too (e.g. --train-per-class 450 --val-per-class 50)"
                )
        if not isinstance(self.warmup_epochs, int) or self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be a non-negative integer, got {self.warmup_epochs!r}")
        if self.warmup_epochs and not 0 <= self.warmup_lr <= self.lr:
            raise ValueError(
                f"warmup_lr must lie between 0 and lr ({self.lr}): the warmup rises from it to lr; got {self.warmup_lr}"
            )
        if self.lr <= 0 or self.norm_scale <= 0:
            raise ValueError(f"lr and norm_scale must be positive, got lr={self.lr}, norm_scale={self.norm_scale}")
        if self.priority is not None and sorted(self.priority) != list(range(1, len(self.priority) + 1)):
            raise ValueError(f"priority must list every stage once, numbered from 1 (e.g. 3 2 1), got {self.priority}")
        for option in OPTIONAL_SETTINGS:
            if getattr(self, option) is not None and option not in TABLE[self.method].options:
                allowed = ", ".join(name for name, method in TABLE.items() if option in method.options)
                raise ValueError(f"{option} applies to the methods {allowed} only, not {self.method!r}")
        if self.dataset != "digits" and self.data_dir is None and not (self.download and self.dataset != "imagefolder"):
            raise ValueError(
                f"dataset {self.dataset!r} needs --data-dir (an ImageFolder tree, or for CIFAR a torchvision "
                "folder; add --download to fetch CIFAR there)"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the settings as YAML, whole (a kill while a resume rewrites a run's config.yaml
        leaves the earlier one)."""
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown setting(s) {unknown}; valid settings: {sorted(known)}")
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(read_yaml(path), source=str(path))

    @classmethod
    def from_run(cls, run: str | Path, data_dir: str | None = None) -> TrainConfig:
        """The config of a run folder of ``anytime-train`` (its ``config.yaml``), or of a checkpoint
        folder written by ``anytime-push`` (its ``train_config.yaml``); ``data_dir``: where its
        dataset is now."""
        run = Path(run)
        found = [run / name for name in ("config.yaml", EXPORTED_TRAIN_CONFIG) if (run / name).is_file()]
        if not found:
            raise FileNotFoundError(
                f"{run} is not a run folder (no config.yaml) or a checkpoint folder of anytime-push (no "
                f"{EXPORTED_TRAIN_CONFIG}): pass the --output of anytime-train"
            )
        cfg = cls.load(found[0])
        if data_dir is not None:
            cfg.data_dir = data_dir
            cfg.validate()
        return cfg


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist (see examples/configs/ for the paper's runs)")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(f"config file {path} is not valid YAML{where}: {problem}") from error
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a mapping of settings, got {type(values).__name__}")
    return values


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, yaml.safe_load(value)


def build_parser() -> argparse.ArgumentParser:
    """``anytime-train``'s arguments. Only flags given on the command line override the config file."""
    p = argparse.ArgumentParser(
        prog="anytime-train",
        description="Train an anytime network (or a plain Oracle network) with one of the paper's methods.",
        argument_default=argparse.SUPPRESS,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", help="YAML file of settings (examples/configs/); flags override it")
    g = p.add_argument_group("model")
    g.add_argument("--model", help="a registered timm model, e.g. anytime_cifar_resnet42_w124 or cifar_resnet42")
    g.add_argument("--model-kwargs", nargs="+", type=_key_value, metavar="KEY=VALUE", help="e.g. width=0.5")
    g.add_argument(
        "--pretrained",
        action="store_true",
        help="start from the model's pretrained weights, e.g. --model anytime_cifar_resnet20_w124.osgd_cifar10_e100 "
        "(new classes or input channels: timm adapts the heads and the first convolution)",
    )
    g.add_argument(
        "--initial-checkpoint",
        help="start from this .safetensors file (or a run folder's final weights) of the same model and classes",
    )
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS)
    g.add_argument("--data-dir", help="ImageFolder tree with train/ and test/ (or val/), or a torchvision CIFAR folder")
    g.add_argument("--download", action="store_true", help="download CIFAR into --data-dir if missing")
    g.add_argument("--train-per-class", type=int, help="use only the first N training images of each class")
    g.add_argument("--eval-per-class", type=int, help="use only the first N evaluation images of each class")
    g.add_argument(
        "--val-per-class",
        type=int,
        help="also evaluate on N held-out training images per class (those after --train-per-class), logged as "
        "val_top1_err: choose settings on these, not on the test split",
    )
    g.add_argument("--batch-size", type=int, help="global batch per optimizer step (all processes together)")
    g.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step")
    g.add_argument("--eval-batch-size", type=int)
    g.add_argument("--workers", type=int, help="DataLoader workers (streamed datasets only)")
    g = p.add_argument_group("regularization (off by default, as in the paper)")
    g.add_argument("--smoothing", type=float, help="label smoothing of every stage's training loss, e.g. 0.1")
    g.add_argument(
        "--cutout",
        type=int,
        help="Cutout: one square of this side (pixels) per training image set to the mean, e.g. 16 for CIFAR "
        "(in-memory datasets)",
    )
    g.add_argument("--aa", help="timm's auto-augment policy, e.g. rand-m9-mstd0.5-inc1 (streamed ImageFolder only)")
    g.add_argument("--reprob", type=float, help="random erasing probability per training image, e.g. 0.25")
    g.add_argument("--remode", choices=ERASE_MODES, help="what fills an erased box (timm's RandomErasing)")
    g.add_argument("--recount", type=int, help="at most this many erased boxes per image")
    g.add_argument("--mixup", type=float, help="Mixup's alpha (Beta(alpha, alpha) mixing of image pairs), e.g. 0.2")
    g.add_argument("--cutmix", type=float, help="CutMix's alpha (a pasted box from another image), e.g. 1.0")
    g.add_argument("--mixup-prob", type=float, help="probability of mixing a batch (or pair, or image)")
    g.add_argument("--mixup-switch-prob", type=float, help="with both on: probability of CutMix instead of Mixup")
    g.add_argument("--mixup-mode", choices=MIXUP_MODES, help="one mixing factor per batch, pair or image")
    g.add_argument("--mixup-off-epoch", type=int, help="stop mixing from this epoch on (0: never)")
    g = p.add_argument_group("gradient clipping and weight averaging (off by default, as in the paper)")
    g.add_argument(
        "--clip-grad",
        type=float,
        help="clip every step's gradient (after OSGD's combination) at this norm or value, e.g. 1.0",
    )
    g.add_argument("--clip-mode", choices=CLIP_MODES, help="what --clip-grad bounds (timm's dispatch_clip_grad)")
    g.add_argument(
        "--model-ema",
        action="store_true",
        help="also keep an exponential moving average of the weights (timm's ModelEmaV3), evaluated as ema_eval_* "
        "and saved as model_ema.safetensors",
    )
    g.add_argument("--model-ema-decay", type=float, help="the EMA's decay per step (0.9998: about 5,000 steps)")
    g.add_argument("--model-ema-warmup", action="store_true", help="ramp the EMA's decay up from 0 (use_warmup)")
    g = p.add_argument_group("method")
    g.add_argument("--method", choices=tuple(TABLE))
    g.add_argument("--priority", nargs="+", type=int, help="stage order for OSGD, highest first, e.g. 3 2 1")
    g.add_argument("--stage-weights", nargs="+", type=float, help="loss weights k_i for sgd")
    g.add_argument("--norm-scale", type=float, help="C of normsgd / osgd_norm")
    g.add_argument("--reduction", choices=("sum", "mean", "mean_reached"), help="override the method's reduction")
    g.add_argument(
        "--stage-passes",
        choices=STAGE_PASSES,
        help="per-stage losses from one full pass (single) or one pass of each subnetwork (separate); auto: "
        "separate for normsgd/osgd/osgd_norm on width-nested models (same gradients, less work)",
    )
    g = p.add_argument_group("optimizer and schedule")
    g.add_argument("--opt", help="any timm optimizer name (create_optimizer_v2)")
    g.add_argument("--lr", type=float)
    g.add_argument("--momentum", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--epochs", type=int)
    g.add_argument("--sched", help="any timm scheduler name (create_scheduler_v2)")
    g.add_argument("--decay-milestones", nargs="+", type=int, help="multistep epochs (default: 30/60/80%% of epochs)")
    g.add_argument("--decay-rate", type=float)
    g.add_argument(
        "--warmup-epochs",
        type=int,
        help="epochs of linear warmup, counted inside --epochs (default 0: none); the decays stay where they are",
    )
    g.add_argument(
        "--warmup-lr", type=float, help="lr of the first warmup epoch, rising linearly to --lr (default 1e-5, timm's)"
    )
    g = p.add_argument_group("run")
    g.add_argument("--output", help="run folder (refuses to reuse a non-empty one without --resume/--overwrite)")
    g.add_argument("--name", help="label of this run in reports")
    g.add_argument("--seed", type=int)
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="mixed precision (Accelerate); auto: bf16 on a CUDA GPU, none on the CPU",
    )
    g.add_argument("--channels-last", action="store_true", help="NHWC memory layout (faster convolutions)")
    g.add_argument("--compile", action="store_true", help="torch.compile the forward (compiles once per stage)")
    g.add_argument(
        "--grad-checkpointing",
        action="store_true",
        help="recompute each block's activations in the backward pass instead of storing them (less memory)",
    )
    add_cpu_allocator_argument(g, default=None)
    g.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is present")
    g.add_argument("--log-with", nargs="+", help="Accelerate trackers, e.g. tensorboard")
    g.add_argument("--eval-every", type=int, help="evaluate every N epochs (and after the last)")
    g.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    g.add_argument("--overwrite", action="store_true", help="delete the results already in --output")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return p


def saved_run_config(output: str | Path) -> Path:
    """The ``config.yaml`` of the run in ``output`` that ``--resume`` continues; an error if none."""
    path = Path(output) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"--resume: {output} holds no run to resume (no config.yaml)")
    return path


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    """Defaults, then the ``--config`` file, then the flags given. ``--resume`` without
    ``--config`` starts from the run's own saved settings, so ``--output RUN --resume`` is enough."""
    args = vars(build_parser().parse_args(argv))
    if "config" in args:
        values = read_yaml(args.pop("config"))
    elif args.get("resume") and "output" in args:
        # said now, not as an error about a default setting the missing file would have replaced
        values = read_yaml(saved_run_config(args["output"]))
    else:
        values = {}
    if "model_kwargs" in args:
        args["model_kwargs"] = {**values.get("model_kwargs", {}), **dict(args["model_kwargs"])}
    return TrainConfig.from_dict({**values, **args})
