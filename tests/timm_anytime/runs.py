"""Tiny, fast training configurations shared by the trainer, CLI and report tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from timm_anytime.train import TrainConfig, Trainer, train

MODEL = "anytime_cifar_resnet20_w124"
TINY: dict[str, Any] = dict(
    dataset="digits",
    model=MODEL,
    model_kwargs={"width": 0.5},
    train_per_class=16,  # 160 training digits: 4 steps of 40 per epoch
    eval_per_class=8,
    batch_size=40,
    eval_batch_size=80,
    epochs=2,
    lr=0.05,
    progress=False,
)


def tiny_config(output: Path, **overrides: Any) -> TrainConfig:
    return TrainConfig(**{**TINY, "output": str(output), **overrides})


def tiny_args(output: Path, *extra: str) -> list[str]:
    """The same tiny run as ``anytime-train`` flags."""
    return [
        "--dataset=digits",
        f"--model={MODEL}",
        "--model-kwargs",
        "width=0.5",
        "--train-per-class=16",
        "--eval-per-class=8",
        "--batch-size=40",
        "--eval-batch-size=80",
        "--epochs=2",
        "--lr=0.05",
        "--no-progress",
        f"--output={output}",
        *extra,
    ]


def weights(run: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(str(run / name))


CIFAR_CLASSES = [f"class{i}" for i in range(10)]


def toy_cifar(root: Path, per_class: int) -> Path:
    """A CIFAR-shaped ImageFolder tree of random 32x32 JPEGs (names not in index order)."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in CIFAR_CLASSES:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"img_{(7 * i) % per_class:03d}_{i}.jpg")
    return root


def interrupt_in_epoch(cfg: TrainConfig, epoch: int, monkeypatch: Any) -> None:
    """Train ``cfg`` until epoch ``epoch`` (0-based) starts, then stop it as a Ctrl-C would: the
    checkpoint of the epochs before stays in its folder, ready for ``resume=True``."""
    import pytest

    original = Trainer._train_epoch

    def stop(self: Trainer, index: int, phase: Any) -> dict[str, Any]:
        if index == epoch:
            raise KeyboardInterrupt
        return original(self, index, phase)

    monkeypatch.setattr(Trainer, "_train_epoch", stop)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.setattr(Trainer, "_train_epoch", original)
