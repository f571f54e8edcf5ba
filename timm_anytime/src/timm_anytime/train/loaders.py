"""A run's data: the configured dataset as training and evaluation batches on the right device,
sharded across processes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from timm.data import ImageDataset
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from ..data import DataSpec, InMemoryDataset, InMemoryLoader, load_cifar, load_digits, load_held_out
from ..data.sources import first_per_class
from ..data.stream import attach_transforms, image_folder_datasets, num_classes_of, stream_loader
from .config import TrainConfig


@dataclass
class Sources:
    """The loaded (or located) dataset, before any model exists."""

    spec: DataSpec | None  # None for streamed ImageFolder trees: known once the model is
    train: InMemoryDataset | ImageDataset | None  # None when only the evaluation split was asked for
    evaluation: InMemoryDataset | ImageDataset
    num_classes: int
    in_chans: int
    validation: InMemoryDataset | None = None  # held-out training images (val_per_class)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.evaluation, InMemoryDataset)


def load_sources(cfg: TrainConfig, progress: bool = True, train: bool = True) -> Sources:
    """The dataset ``cfg`` names (``train=False``: its evaluation split only, for evaluation), with
    the held-out validation images when ``cfg.val_per_class`` is set and ``train``."""
    sources = _load_sources(cfg, progress, train)
    if train and cfg.val_per_class is not None:
        # TrainConfig.validate asks for train_per_class too, which _load_sources refuses for a folder
        assert cfg.train_per_class is not None
        sources.validation = load_held_out(
            cfg.dataset,
            cfg.data_dir,
            trained_per_class=cfg.train_per_class,
            per_class=cfg.val_per_class,
            download=cfg.download,
            progress=progress,
        )
    return sources


def _load_sources(cfg: TrainConfig, progress: bool, train: bool) -> Sources:
    if cfg.dataset == "digits":
        digits_train, digits_test, spec = load_digits()
        digits_train = first_per_class(digits_train, cfg.train_per_class)
        digits_test = first_per_class(digits_test, cfg.eval_per_class)
        return Sources(spec, digits_train, digits_test, spec.num_classes, spec.in_chans)
    root = Path(cfg.data_dir) if cfg.data_dir is not None else Path("data") / cfg.dataset
    if cfg.dataset in ("cifar10", "cifar100"):
        train_data, test, spec = load_cifar(
            cfg.dataset,
            root,
            download=cfg.download,
            train_per_class=cfg.train_per_class,
            eval_per_class=cfg.eval_per_class,
            progress=progress,
            train=train,
        )
        return Sources(spec, train_data, test, spec.num_classes, spec.in_chans)
    if cfg.train_per_class is not None or cfg.eval_per_class is not None:
        raise ValueError(
            "train_per_class / eval_per_class / val_per_class apply to the in-memory datasets (digits, cifar) only"
        )
    train_set, evaluation = image_folder_datasets(root)
    return Sources(None, train_set, evaluation, num_classes_of(train_set), 3)


class DeviceLoader:
    """Batches of a DataLoader moved to ``device`` (evaluation of streamed datasets)."""

    def __init__(self, loader: DataLoader, device: torch.device) -> None:
        self.loader, self.device = loader, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for images, labels in self.loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)


def evaluation_loader(
    data: InMemoryDataset | ImageDataset,
    batch_size: int,
    device: torch.device | str,
    *,
    spec: DataSpec | None,
    workers: int = 0,
    num_shards: int = 1,
    shard_index: int = 0,
) -> Iterable[tuple[Tensor, Tensor]]:
    """Unaugmented batches of ``data`` in order, on ``device``: the ``shard_index``-th of
    ``num_shards`` shares. In-memory data is normalized with ``spec``; a streamed dataset must have
    its evaluation transforms attached (``data.stream.attach_transforms``). Training and
    ``anytime-eval`` both evaluate through this."""
    if isinstance(data, InMemoryDataset):
        if spec is None:
            raise ValueError("in-memory evaluation data needs its DataSpec (mean and std)")
        return InMemoryLoader(
            data,
            batch_size,
            train=False,
            mean=spec.mean,
            std=spec.std,
            device=device,
            num_shards=num_shards,
            shard_index=shard_index,
        )
    shard = data if num_shards == 1 else Subset(data, range(shard_index, len(data), num_shards))
    return DeviceLoader(stream_loader(shard, batch_size, train=False, workers=workers), torch.device(device))


@dataclass
class Loaders:
    train: Any  # has set_epoch() and __len__ (batches per process)
    evaluation: Iterable[tuple[Tensor, Tensor]]
    spec: DataSpec
    validation: Iterable[tuple[Tensor, Tensor]] | None = None


def first_training_batches(train: Any, count: int) -> Iterator[tuple[Tensor, Tensor]]:
    """The first ``count`` batches of a training loader (``Loaders.train``) from epoch 0 on, calling
    ``set_epoch`` at each epoch, as the trainer does."""
    epoch, taken = 0, 0
    while taken < count:
        train.set_epoch(epoch)
        before = taken
        for batch in train:
            yield batch
            taken += 1
            if taken == count:
                return
        if taken == before:
            raise ValueError("the training loader yields no batches: there is nothing to measure")
        epoch += 1


def make_loaders(cfg: TrainConfig, sources: Sources, model: nn.Module, accelerator: Accelerator) -> Loaders:
    """Training batches (this process's share of each global batch of ``cfg.batch_size``) and this
    process's share of the evaluation set, on ``accelerator.device``."""
    world, rank = accelerator.num_processes, accelerator.process_index
    if cfg.batch_size % (world * cfg.grad_accum):
        raise ValueError(
            f"batch_size {cfg.batch_size} must be divisible by processes x grad_accum = {world} x {cfg.grad_accum}"
        )
    if sources.in_memory:
        spec, train_data = sources.spec, sources.train
        assert spec is not None
        assert isinstance(train_data, InMemoryDataset)  # load_sources(train=True)
        if len(train_data) < cfg.batch_size:
            raise ValueError(f"batch_size {cfg.batch_size} is larger than the {len(train_data)} training images")
        common = dict(mean=spec.mean, std=spec.std, device=accelerator.device, num_shards=world, shard_index=rank)
        train = InMemoryLoader(
            train_data,
            cfg.batch_size,
            train=True,
            padding=spec.padding,
            flip=spec.flip,
            cutout=cfg.cutout,
            drop_last=True,
            seed=cfg.seed,
            **common,
        )
        shards = dict(num_shards=world, shard_index=rank, spec=spec)
        evaluation = evaluation_loader(sources.evaluation, cfg.eval_batch_size, accelerator.device, **shards)
        validation = None
        if sources.validation is not None:
            validation = evaluation_loader(sources.validation, cfg.eval_batch_size, accelerator.device, **shards)
        return Loaders(train, evaluation, spec, validation)
    streamed, evaluation_data = sources.train, sources.evaluation
    assert isinstance(streamed, ImageDataset)  # a streamed folder, loaded for training
    assert isinstance(evaluation_data, ImageDataset)
    data_config = attach_transforms(streamed, evaluation_data, model, auto_augment=cfg.aa)
    spec = DataSpec(
        "imagefolder",
        sources.num_classes,
        3,
        int(data_config["input_size"][-1]),
        tuple(data_config["mean"]),
        tuple(data_config["std"]),
        padding=0,
        flip=True,
    )
    train = accelerator.prepare_data_loader(
        stream_loader(streamed, cfg.batch_size // world, train=True, workers=cfg.workers, seed=cfg.seed)
    )
    evaluation = evaluation_loader(
        evaluation_data,
        cfg.eval_batch_size,
        accelerator.device,
        spec=None,
        workers=cfg.workers,
        num_shards=world,
        shard_index=rank,
    )
    return Loaders(train, evaluation, spec)
