"""In-memory data: device augmentation against a brute-force reference, loading, errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image

from tests.shared_data import CIFAR10, needs_cifar10
from timm_anytime.data import (
    InMemoryDataset,
    InMemoryLoader,
    cutout_mask,
    load_image_folder,
    normalize,
    random_crop_flip,
)

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def crops_of(image: torch.Tensor, padding: int) -> list[tuple[int, int, bool, torch.Tensor]]:
    """Every crop of the zero-padded image, plain and mirrored (written independently)."""
    c, h, w = image.shape
    padded = torch.zeros(c, h + 2 * padding, w + 2 * padding, dtype=image.dtype)
    padded[:, padding : padding + h, padding : padding + w] = image
    out = []
    for top in range(2 * padding + 1):
        for left in range(2 * padding + 1):
            window = padded[:, top : top + h, left : left + w]
            out.append((top, left, False, window))
            out.append((top, left, True, window.flip(-1)))
    return out


def test_every_augmented_image_is_a_padded_crop_possibly_mirrored() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (600, 3, 6, 5), generator=gen, dtype=torch.uint8)  # no zeros: crops are unique
    out = random_crop_flip(images, padding=2, generator=torch.Generator().manual_seed(1))
    seen = set()
    for image, augmented in zip(images, out, strict=True):
        matches = [(t, left, f) for t, left, f, crop in crops_of(image, 2) if torch.equal(crop, augmented)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) == 5 * 5 * 2  # every offset and both orientations occur


def test_no_padding_and_no_flip_is_the_identity() -> None:
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(random_crop_flip(images, padding=0, flip=False), images)


def test_normalize_matches_the_per_channel_formula() -> None:
    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    expected = torch.stack([(images[:, c].double() / 255 - mean[c]) / std[c] for c in range(3)], dim=1)
    torch.testing.assert_close(normalize(images, mean, std, torch.float64), expected)


def cutout_squares(height: int, width: int, size: int) -> dict[bytes, tuple[int, int]]:
    """Every mask Cutout may draw, keyed by its bytes, with its centre (written independently: the
    square of ``size`` rows and columns starting ``size // 2`` before the centre, clipped)."""
    out = {}
    for cy in range(height):
        for cx in range(width):
            mask = torch.ones(1, height, width, dtype=torch.bool)
            for row in range(height):
                for col in range(width):
                    if cy - size // 2 <= row < cy - size // 2 + size and cx - size // 2 <= col < cx - size // 2 + size:
                        mask[0, row, col] = False
            out[mask.numpy().tobytes()] = (cy, cx)
    return out


@pytest.mark.parametrize("size", [4, 3])
def test_every_cutout_mask_is_one_clipped_square_with_a_uniform_centre(size: int) -> None:
    masks = cutout_mask(3000, 6, 5, size, torch.Generator().manual_seed(0))
    assert masks.shape == (3000, 1, 6, 5)
    assert masks.dtype == torch.bool
    squares = cutout_squares(6, 5, size)
    centres = [squares[mask.numpy().tobytes()] for mask in masks]  # KeyError: not a clipped square
    counts = torch.bincount(torch.tensor([cy * 5 + cx for cy, cx in centres]), minlength=30)
    assert counts.min() > 50  # every centre occurs, about 100 times each
    with pytest.raises(ValueError, match="at least 1 pixel"):
        cutout_mask(2, 6, 5, 0)


def make_dataset(n: int = 50) -> InMemoryDataset:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=gen, dtype=torch.uint8)
    return InMemoryDataset(images, torch.arange(n), [str(i) for i in range(n)])


def test_training_epochs_cover_every_example_once_and_are_reproducible() -> None:
    data = make_dataset()
    loader = InMemoryLoader(data, 16, train=True, mean=(0.5,) * 3, std=(0.5,) * 3, seed=3)
    assert len(loader) == 4
    loader.set_epoch(1)
    first = [(x, y) for x, y in loader]
    assert sorted(torch.cat([y for _, y in first]).tolist()) == list(range(50))
    assert first[0][0].dtype == torch.float32
    assert first[0][0].shape == (16, 3, 8, 8)
    again = list(loader)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    loader.set_epoch(2)
    assert not torch.equal(next(iter(loader))[1], first[0][1])


def test_evaluation_is_in_order_and_unaugmented() -> None:
    data = make_dataset()
    loader = InMemoryLoader(data, 32, train=False, mean=(0.0,) * 3, std=(1.0,) * 3)
    x, y = next(iter(loader))
    assert y.tolist() == list(range(32))
    torch.testing.assert_close(x, data.images[:32].float() / 255)


def test_batches_follow_torchs_default_dtype_unless_told() -> None:
    """As the parameters timm creates: float64 training (the stage-passes test) needs float64 data."""
    data = make_dataset()
    kwargs = dict(train=False, mean=(0.5,) * 3, std=(0.25,) * 3)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        wide = next(iter(InMemoryLoader(data, 8, **kwargs)))[0]
        told = next(iter(InMemoryLoader(data, 8, dtype=torch.float32, **kwargs)))[0]
    finally:
        torch.set_default_dtype(default)
    assert (wide.dtype, told.dtype) == (torch.float64, torch.float32)
    assert next(iter(InMemoryLoader(data, 8, **kwargs)))[0].dtype == torch.float32
    exact = (data.images[:8].double() / 255 - 0.5) / 0.25
    torch.testing.assert_close(wide, exact, rtol=0, atol=1e-12)


@needs_cifar10
def test_loading_the_cifar10_folder_matches_pil() -> None:
    data = load_image_folder(CIFAR10 / "test", max_per_class=5, progress=False)
    assert data.classes == CIFAR_CLASSES  # sorted folders give the standard label order
    assert data.images.shape == (50, 3, 32, 32)
    assert data.images.dtype == torch.uint8
    assert data.labels.tolist() == [c for c in range(10) for _ in range(5)]
    first = sorted((CIFAR10 / "test" / "airplane").iterdir())[0]
    with warnings.catch_warnings():  # torchvision's own decoder, an independent reference (read_file
        warnings.simplefilter("ignore", DeprecationWarning)  # is deprecated in newer torchvision)
        reference = torchvision.io.decode_image(torchvision.io.read_file(str(first)))
    assert torch.equal(data.images[0], reference)


def test_bad_folders_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist: expected an ImageFolder tree"):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="has no class sub-folders"):
        load_image_folder(tmp_path)
    (tmp_path / "cat").mkdir()
    with pytest.raises(ValueError, match=r"cat holds no \.jpg"):
        load_image_folder(tmp_path)
    (tmp_path / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"cannot decode image .*broken\.jpg"):
        load_image_folder(tmp_path, progress=False)
    (tmp_path / "cat" / "broken.jpg").unlink()
    Image.new("RGB", (4, 4)).save(tmp_path / "cat" / "a.png")
    Image.new("RGB", (5, 4)).save(tmp_path / "cat" / "b.png")
    with pytest.raises(ValueError, match="differ in size"):
        load_image_folder(tmp_path, progress=False)


@pytest.mark.parametrize("train", [True, False])
def test_process_shards_together_are_the_whole_batch(train: bool) -> None:
    data = make_dataset(50)
    kwargs = dict(train=train, mean=(0.5,) * 3, std=(0.25,) * 3, seed=3)
    whole = list(InMemoryLoader(data, 12, **kwargs))
    shards = [list(InMemoryLoader(data, 12, num_shards=3, shard_index=r, **kwargs)) for r in range(3)]
    for b, (images, labels) in enumerate(whole):
        assert torch.equal(torch.cat([shards[r][b][0] for r in range(3)]), images)
        assert torch.equal(torch.cat([shards[r][b][1] for r in range(3)]), labels)
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        InMemoryLoader(data, 10, train=True, mean=(0.5,) * 3, std=(0.25,) * 3, num_shards=3, shard_index=0)


def test_cutout_sets_one_square_per_training_image_to_the_mean_and_shards_split_it() -> None:
    data = make_dataset(48)
    kwargs = dict(train=True, mean=(0.5,) * 3, std=(0.25,) * 3, seed=3, padding=0, flip=False)
    plain = next(iter(InMemoryLoader(data, 16, **kwargs)))
    cut = next(iter(InMemoryLoader(data, 16, cutout=4, **kwargs)))
    assert torch.equal(plain[1], cut[1])  # the same shuffle: cutout draws after it
    squares = cutout_squares(8, 8, 4)
    for before, after in zip(plain[0], cut[0], strict=True):
        erased = after.eq(0).all(dim=0, keepdim=True) & before.ne(0).any(dim=0, keepdim=True)
        assert (~erased).numpy().tobytes() in squares  # zero (the mean) on exactly one clipped square
        assert torch.equal(after[:, ~erased[0]], before[:, ~erased[0]])  # untouched elsewhere
    shards = [next(iter(InMemoryLoader(data, 16, cutout=4, num_shards=2, shard_index=r, **kwargs))) for r in range(2)]
    assert torch.equal(torch.cat([shard[0] for shard in shards]), cut[0])
    evaluation = next(iter(InMemoryLoader(data, 16, **{**kwargs, "train": False}, cutout=4)))
    assert not evaluation[0].eq(0).all(dim=1).any()  # evaluation batches are never cut
    with pytest.raises(ValueError, match="square side in pixels"):
        InMemoryLoader(data, 16, cutout=-1, **kwargs)


def test_digits_are_bundled_and_split_once() -> None:
    from timm_anytime.data import load_digits

    train, test, spec = load_digits()
    assert (len(train), len(test)) == (1297, 500)
    assert train.images.shape[1:] == (1, 8, 8)
    assert train.images.dtype == torch.uint8
    assert int(train.images.max()) == 255
    assert not spec.flip
    pairs = {(bytes(i.flatten().tolist()), int(y)) for i, y in zip(train.images, train.labels, strict=True)}
    assert sorted(set(test.labels.tolist())) == list(range(10))
    overlap = sum((bytes(i.flatten().tolist()), int(y)) in pairs for i, y in zip(test.images, test.labels, strict=True))
    assert overlap < 5  # a few digits are exact duplicates in the source data; the split itself is disjoint


@needs_cifar10
def test_cifar_folder_evaluation_split_only() -> None:
    from timm_anytime.data import load_cifar

    train, test, spec = load_cifar("cifar10", CIFAR10, eval_per_class=3, train=False, progress=False)
    assert train is None
    assert len(test) == 30
    assert test.classes == CIFAR_CLASSES
    assert spec.num_classes == 10
    assert spec.image_size == 32
