"""Large ImageFolder datasets streamed from disk with timm's dataset and transform factories."""

from __future__ import annotations

from pathlib import Path

import torch
from timm.data import ImageDataset, create_dataset, create_transform, resolve_data_config
from torch import nn
from torch.utils.data import DataLoader, Dataset


def image_folder_datasets(root: str | Path) -> tuple[ImageDataset, ImageDataset]:
    """The training and evaluation splits of ``root/train/<class>/*`` and ``root/{val,validation,test}``
    as timm datasets (transforms are attached later by :func:`attach_transforms`)."""
    root = Path(root)
    if not (root / "train").is_dir():
        raise FileNotFoundError(
            f"data folder {root} has no train/ split: expected {root}/train/<class>/<image> and "
            f"{root}/val/<class>/<image> (or validation/ or test/)"
        )
    if not any((root / split).is_dir() for split in ("val", "validation", "test")):
        raise FileNotFoundError(f"data folder {root} has train/ but no val/, validation/ or test/ split")
    train = create_dataset("", root=str(root), split="train", is_training=True)
    split = next(s for s in ("val", "validation", "test") if (root / s).is_dir())
    evaluation = create_dataset("", root=str(root), split=split)
    if len(train) == 0 or len(evaluation) == 0:
        raise ValueError(f"{root}: found {len(train)} training and {len(evaluation)} evaluation images")
    return train, evaluation


def num_classes_of(dataset: ImageDataset) -> int:
    return len(dataset.reader.class_to_idx)


def attach_transforms(
    train: ImageDataset | None, evaluation: ImageDataset, model: nn.Module, auto_augment: str | None = None
) -> dict:
    """timm's standard training and evaluation transforms for ``model``'s data config; the training
    transform with timm's ``auto_augment`` policy if given (e.g. ``rand-m9-mstd0.5-inc1``)."""
    config = resolve_data_config({}, model=model)
    if train is not None:
        train.transform = create_transform(**config, is_training=True, auto_augment=auto_augment)
    evaluation.transform = create_transform(**config, is_training=False)
    return config


def stream_loader(dataset: Dataset, batch_size: int, *, train: bool, workers: int, seed: int = 0) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        drop_last=train,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed) if train else None,
    )
