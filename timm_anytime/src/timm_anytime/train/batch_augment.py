"""Augmentation of whole training batches in the trainer: timm's ``RandomErasing`` and ``Mixup``
(Mixup and CutMix), and the class each mixed target names.

Both act on each process's batch after the data pipeline (in-memory or streamed: normalized
images on the training device) and before the per-stage losses, in timm's ``train.py`` order
(erasing, then mixing). Every stage of an anytime network sees the same augmented images and,
with mixing, trains on the same soft targets by cross-entropy against class probabilities.
"""

from __future__ import annotations

import torch
from timm.data import Mixup
from timm.data.random_erasing import RandomErasing
from torch import Tensor

from .config import TrainConfig


def build_random_erasing(cfg: TrainConfig, device: torch.device | str) -> RandomErasing | None:
    """timm's ``RandomErasing`` for ``cfg`` (``None`` when ``reprob`` is 0): with probability
    ``reprob`` per image, up to ``recount`` boxes filled per ``remode``."""
    if cfg.reprob <= 0:
        return None
    return RandomErasing(cfg.reprob, mode=cfg.remode, max_count=cfg.recount, device=str(device))


def build_mixup(cfg: TrainConfig, num_classes: int) -> Mixup | None:
    """timm's ``Mixup`` for ``cfg`` (``None`` when both ``mixup`` and ``cutmix`` are 0). Label
    smoothing, if set, is applied by ``Mixup`` to the mixed targets (timm's convention), so the
    loss itself must then be plain cross-entropy against those targets."""
    if not (cfg.mixup > 0 or cfg.cutmix > 0):
        return None
    return Mixup(
        mixup_alpha=cfg.mixup,
        cutmix_alpha=cfg.cutmix,
        prob=cfg.mixup_prob,
        switch_prob=cfg.mixup_switch_prob,
        mode=cfg.mixup_mode,
        label_smoothing=cfg.smoothing,
        num_classes=num_classes,
    )


def mixup_active(cfg: TrainConfig, epoch: int) -> bool:
    """Whether batches of ``epoch`` (0-based) are mixed: always, unless ``mixup_off_epoch`` (timm's
    ``--mixup-off-epoch``; 0 means never) is set and reached."""
    return not (cfg.mixup_off_epoch and epoch >= cfg.mixup_off_epoch)


def dominant_labels(targets: Tensor) -> Tensor:
    """Class indices for the training error: ``targets`` itself when it holds indices, else the
    class with the largest share of each mixed target (its first such class on a tie)."""
    return targets if targets.ndim == 1 else targets.argmax(-1)
