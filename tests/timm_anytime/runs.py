"""Tiny, fast training configurations shared by the trainer, CLI and report tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from timm_anytime.train import TrainConfig

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
