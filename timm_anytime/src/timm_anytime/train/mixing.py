"""Mixup and CutMix of the training batches (timm's ``Mixup``), and the class each mixed target names.

Mixing happens in the trainer, on each process's batch after the data pipeline (in-memory or
streamed) and before the per-stage losses: every stage of an anytime network sees the same mixed
images and is trained on the same soft targets, with cross-entropy against class probabilities.
"""

from __future__ import annotations

from timm.data import Mixup
from torch import Tensor

from .config import TrainConfig


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
