"""Small image datasets decoded once into one uint8 tensor, served in batches on any device."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from tqdm import tqdm

from .augment import cutout_mask, normalize, random_crop_flip

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass
class InMemoryDataset:
    """All images of a dataset as one uint8 tensor [N, C, H, W], with int64 labels [N]."""

    images: Tensor
    labels: Tensor
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def list_image_folder(
    root: Path, max_per_class: int | None, skip_per_class: int = 0
) -> tuple[list[str], list[tuple[Path, int]]]:
    """The classes (sorted folder names) and ``(image path, label)`` samples of an ImageFolder tree,
    in the order the in-memory loader reads them: per class, image files sorted by name, the
    ``max_per_class`` after the first ``skip_per_class``."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"data folder {root} does not exist: expected an ImageFolder tree {root}/<class>/<image>.jpg "
            "(for the CIFAR-10 copy: .../datasets/cifar10/train or .../test)"
        )
    classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    if not classes:
        raise ValueError(f"{root} has no class sub-folders: expected {root}/<class>/<image>.jpg")
    samples: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"class folder {root / name} holds no {'/'.join(IMAGE_SUFFIXES)} images")
        stop = None if max_per_class is None else skip_per_class + max_per_class
        samples.extend((path, label) for path in files[skip_per_class:stop])
    return classes, samples


def _decode(path: Path) -> Tensor:
    """One image as uint8 [3, H, W] (PIL: maintained, releases the GIL while decoding)."""
    try:
        with Image.open(path) as image:
            array = np.array(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot decode image {path}: {error}") from error
    return torch.from_numpy(array).permute(2, 0, 1)


def load_image_folder(
    root: str | os.PathLike,
    *,
    max_per_class: int | None = None,
    skip_per_class: int = 0,
    num_threads: int | None = None,
    progress: bool = True,
) -> InMemoryDataset:
    """Decode an ImageFolder tree (``root/<class>/<image>``, classes in sorted order) into memory.

    Every image must have the same size (as in CIFAR); use a streaming loader for anything else.
    ``max_per_class`` keeps the first images of each class (sorted by file name), after the first
    ``skip_per_class`` (those a run trained on, when loading held-out images).
    """
    classes, samples = list_image_folder(Path(root), max_per_class, skip_per_class)
    if not samples:
        raise ValueError(f"{root} has no images after the first {skip_per_class} of each class")
    workers = num_threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        decoded = list(
            tqdm(
                pool.map(_decode, (path for path, _ in samples)),
                total=len(samples),
                desc=f"decoding {Path(root).name}",
                unit="img",
                disable=not progress,
            )
        )
    shapes = {tuple(image.shape) for image in decoded}
    if len(shapes) > 1:
        raise ValueError(
            f"images under {root} differ in size ({sorted(shapes)[:3]} ...): the in-memory path needs one size; "
            "resize them or use a streaming loader"
        )
    labels = torch.tensor([label for _, label in samples], dtype=torch.long)
    return InMemoryDataset(torch.stack(decoded), labels, classes)


class InMemoryLoader:
    """Batches of an :class:`InMemoryDataset` on ``device``: shuffled, cropped and flipped (and
    with ``cutout``, one ``cutout`` x ``cutout`` square per image set to the mean, :func:`cutout_mask`)
    for training, in order for evaluation; normalized to ``dtype`` (default: torch's default float
    dtype, that of the parameters timm creates). Yields ``(images, labels)``.

    The dataset is moved to ``device`` once. ``set_epoch(e)`` makes the shuffle and augmentation
    of epoch ``e`` reproducible from ``seed``.

    Data parallel: with ``num_shards=W``, every process draws the same global batch of
    ``batch_size`` and keeps its contiguous slice ``shard_index`` (so W processes together see
    exactly what one process sees, augmentation included).
    """

    def __init__(
        self,
        dataset: InMemoryDataset,
        batch_size: int,
        *,
        train: bool,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str = "cpu",
        padding: int = 4,
        flip: bool = True,
        cutout: int = 0,
        drop_last: bool = False,
        seed: int = 0,
        dtype: torch.dtype | None = None,
        num_shards: int = 1,
        shard_index: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"shard_index must be in 0..{num_shards - 1}, got {shard_index}")
        if cutout < 0:
            raise ValueError(f"cutout must be a square side in pixels (0: off), got {cutout}")
        if train and batch_size % num_shards:
            raise ValueError(
                f"the global batch size {batch_size} must be a multiple of the number of processes {num_shards}"
            )
        self.device = torch.device(device)
        self.images = dataset.images.to(self.device)
        self.labels = dataset.labels.to(self.device)
        self.batch_size, self.train, self.mean, self.std = batch_size, train, tuple(mean), tuple(std)
        self.padding, self.flip, self.cutout, self.drop_last, self.seed = padding, flip, cutout, drop_last, seed
        self.dtype = torch.get_default_dtype() if dtype is None else dtype
        self.num_shards, self.shard_index = num_shards, shard_index
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(len(self.labels), self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        generator = torch.Generator(device=self.device).manual_seed(self.seed * 100_003 + self.epoch)
        count = len(self.labels)
        order = (
            torch.randperm(count, generator=generator, device=self.device)
            if self.train
            else torch.arange(count, device=self.device)
        )
        for batch in range(len(self)):
            index = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            images = self.images[index]
            labels = self.labels[index]
            keep = None
            if self.train:
                images = random_crop_flip(images, self.padding, self.flip, generator)
                if self.cutout:  # drawn for the global batch, so shards see their part of it
                    height, width = images.shape[-2:]
                    keep = cutout_mask(len(index), height, width, self.cutout, generator, self.device)
            if self.num_shards > 1:
                shard = self._shard(len(index))
                images, labels = images[shard], labels[shard]
                keep = keep[shard] if keep is not None else None
            images = normalize(images, self.mean, self.std, self.dtype)
            yield (images if keep is None else images * keep), labels

    def _shard(self, size: int) -> slice:
        bounds = [size * i // self.num_shards for i in range(self.num_shards + 1)]
        return slice(bounds[self.shard_index], bounds[self.shard_index + 1])
