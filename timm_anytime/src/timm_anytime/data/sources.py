"""Where training data comes from: the bundled digits, CIFAR (folder or torchvision), any ImageFolder.

Small datasets (digits, CIFAR) are returned as :class:`InMemoryDataset` pairs, for the fast
in-memory path; ``imagefolder`` trees are left on disk for a streaming loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .memory import InMemoryDataset, load_image_folder

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
DIGITS_TEST_SIZE = 500  # held out from scikit-learn's 1,797 digits, as in examples/osgd_multitask_digits.py
EVAL_SPLITS = ("test", "val", "validation")


@dataclass(frozen=True)
class DataSpec:
    """What a model and its training augmentation need to know about a dataset."""

    name: str
    num_classes: int
    in_chans: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    padding: int  # random-crop padding of the in-memory augmentation
    flip: bool  # horizontal flips (off for digits: a mirrored digit is another symbol)


def load_digits() -> tuple[InMemoryDataset, InMemoryDataset, DataSpec]:
    """scikit-learn's 8x8 handwritten digits (bundled with the package: no download), as uint8
    images [N, 1, 8, 8]; a fixed shuffle holds out 500 for evaluation."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:
        raise ImportError(
            'the digits dataset comes with scikit-learn: pip install "timm-anytime[digits]" (or scikit-learn)'
        ) from error
    digits = sklearn_digits()
    images = torch.from_numpy(np.rint(digits.images * (255 / 16)).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(digits.target).long()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    test, train = order[:DIGITS_TEST_SIZE], order[DIGITS_TEST_SIZE:]
    classes = [str(d) for d in range(10)]
    pixels = images[train].double() / 255
    spec = DataSpec("digits", 10, 1, 8, (float(pixels.mean()),), (float(pixels.std()),), padding=1, flip=False)
    return (
        InMemoryDataset(images[train], labels[train], classes),
        InMemoryDataset(images[test], labels[test], classes),
        spec,
    )


def first_per_class(data: InMemoryDataset, per_class: int | None, skip: int = 0) -> InMemoryDataset:
    """The first ``per_class`` images of every class after its first ``skip`` (all the rest if
    ``per_class`` is None), in their original order."""
    if per_class is None and skip == 0:
        return data
    stop = None if per_class is None else skip + per_class
    keep = torch.cat([torch.nonzero(data.labels == c).flatten()[skip:stop] for c in range(len(data.classes))])
    keep = keep.sort().values
    return InMemoryDataset(data.images[keep], data.labels[keep], data.classes)


def load_held_out(
    name: str,
    root: str | Path | None,
    *,
    trained_per_class: int,
    per_class: int | None = None,
    download: bool = False,
    progress: bool = True,
) -> InMemoryDataset:
    """Training-split images that a run on the first ``trained_per_class`` images of each class never
    saw: the next ``per_class`` of each class (all the rest if None). For calibration and model
    selection without touching the test split. ``name``: digits, cifar10 or cifar100."""
    if name == "digits":
        train, _, _ = load_digits()
        held_out = first_per_class(train, per_class, skip=trained_per_class)
    elif name in ("cifar10", "cifar100"):
        root = Path(root if root is not None else Path("data") / name)
        if (root / "train").is_dir():
            held_out = load_image_folder(
                root / "train", max_per_class=per_class, skip_per_class=trained_per_class, progress=progress
            )
        else:
            held_out = first_per_class(_torchvision_cifar(name, root, "train", download), per_class, trained_per_class)
    else:
        raise ValueError(
            f"held-out training images are available for the in-memory datasets (digits, cifar10, cifar100), "
            f"not {name!r}: pass your own validation loader instead"
        )
    if len(held_out) == 0:
        raise ValueError(f"{name} has no training images after the first {trained_per_class} of each class")
    return held_out


def calibration_split(
    name: str,
    root: str | Path | None,
    *,
    trained_per_class: int | None,
    per_class: int = 500,
    progress: bool = True,
) -> tuple[InMemoryDataset, InMemoryDataset]:
    """``(calibration, test)``: images to calibrate early exit (or choose anything) on, and disjoint
    images to measure on, neither seen in training. A model trained on the first
    ``trained_per_class`` training images of each class calibrates on the next ``per_class`` of
    each class and is measured on the whole test split. One trained on every training image
    (``trained_per_class=None``) has no held-out training images: it calibrates on the first
    ``per_class`` test images of each class and is measured on the rest of the test split."""
    if per_class < 1:
        raise ValueError(f"calibration images per class must be at least 1, got {per_class}")
    if name == "digits":
        _, test, _ = load_digits()
    else:
        _, test, _ = load_cifar(name, root if root is not None else Path("data") / name, train=False, progress=progress)
    if trained_per_class is not None:
        calibration = load_held_out(
            name, root, trained_per_class=trained_per_class, per_class=per_class, progress=progress
        )
        return calibration, test
    calibration, rest = first_per_class(test, per_class), first_per_class(test, None, skip=per_class)
    if len(rest) == 0:
        raise ValueError(f"{name}'s test split has nothing left after the first {per_class} images of each class")
    return calibration, rest


def find_eval_split(root: Path) -> Path:
    for split in EVAL_SPLITS:
        if (root / split).is_dir():
            return root / split
    raise FileNotFoundError(f"{root} has train/ but no evaluation split: expected one of {', '.join(EVAL_SPLITS)}/")


def load_cifar(
    name: str,
    root: str | Path,
    *,
    download: bool = False,
    train_per_class: int | None = None,
    eval_per_class: int | None = None,
    progress: bool = True,
    train: bool = True,
) -> tuple[InMemoryDataset | None, InMemoryDataset, DataSpec]:
    """CIFAR-10/100 from an ImageFolder tree (``root/train/<class>/*``, ``root/test/<class>/*``,
    such as the shared JPEG copy) or from torchvision's folder (downloaded when ``download``).
    Returns ``(train, test, spec)``; ``train`` is None when not requested."""
    if name not in ("cifar10", "cifar100"):
        raise ValueError(f"unknown CIFAR dataset {name!r}: use cifar10 or cifar100")
    root = Path(root)
    num_classes = 10 if name == "cifar10" else 100
    train_data: InMemoryDataset | None = None
    if (root / "train").is_dir():
        test = load_image_folder(find_eval_split(root), max_per_class=eval_per_class, progress=progress)
        if train:
            train_data = load_image_folder(root / "train", max_per_class=train_per_class, progress=progress)
        for data in (test, train_data):
            if data is not None and len(data.classes) != num_classes:
                raise ValueError(f"{root}: {name} has {num_classes} classes, found {len(data.classes)} class folders")
    else:
        test = first_per_class(_torchvision_cifar(name, root, "test", download), eval_per_class)
        if train:
            train_data = first_per_class(_torchvision_cifar(name, root, "train", download), train_per_class)
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
    return train_data, test, DataSpec(name, num_classes, 3, 32, mean, std, padding=4, flip=True)


def _torchvision_cifar(name: str, root: Path, split: str, download: bool) -> InMemoryDataset:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    try:
        data = cls(str(root), train=split == "train", download=download)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted"
        raise FileNotFoundError(
            f"no {name} under {root}: expected an ImageFolder tree ({root}/train/<class>/*.jpg and "
            f"{root}/test/...) or torchvision's {name} files; pass --download to fetch them ({error})"
        ) from error
    images = torch.from_numpy(np.ascontiguousarray(data.data)).permute(0, 3, 1, 2).contiguous()
    return InMemoryDataset(images, torch.tensor(data.targets, dtype=torch.long), list(data.classes))
