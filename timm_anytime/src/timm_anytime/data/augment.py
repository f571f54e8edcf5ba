"""Batch augmentation on the training device: no per-image PIL work, no worker processes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F


def random_crop_flip(
    images: Tensor, padding: int = 4, flip: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    """Pad every image of ``images`` ([B, C, H, W]) with ``padding`` zeros, crop a random H x W
    window of each, and mirror each horizontally with probability 1/2 (CIFAR's standard training
    augmentation), all in one gather on the images' device."""
    if images.ndim != 4:
        raise ValueError(f"images must be a batch [B, C, H, W], got shape {tuple(images.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    batch, _, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    top = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=device)
    left = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=device)
    rows = top[:, None] + torch.arange(height, device=device)  # [B, H]
    cols = left[:, None] + torch.arange(width, device=device)  # [B, W]
    if flip:
        mirror = torch.rand(batch, generator=generator, device=device) < 0.5
        cols = torch.where(mirror[:, None], cols.flip(1), cols)
    index = torch.arange(batch, device=device)[:, None, None]
    return padded[index, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def normalize(
    images: Tensor, mean: Sequence[float], std: Sequence[float], dtype: torch.dtype = torch.float32
) -> Tensor:
    """uint8 images in [0, 255] to ``(x / 255 - mean) / std`` per channel, in ``dtype``."""
    mean_t = torch.tensor(mean, device=images.device, dtype=dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=dtype).view(1, -1, 1, 1)
    return (images.to(dtype) / 255.0 - mean_t) / std_t


def cutout_mask(
    batch: int,
    height: int,
    width: int,
    size: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Cutout (DeVries & Taylor, 2017): a bool mask ``[B, 1, H, W]``, False on one ``size`` x
    ``size`` square per image whose centre is uniform over the image (the square is clipped at the
    borders, so near them it is smaller). Multiply normalized images by it: the square then holds
    the dataset mean."""
    if size < 1:
        raise ValueError(f"cutout size must be at least 1 pixel, got {size}")
    centre_y = torch.randint(0, height, (batch,), generator=generator, device=device)
    centre_x = torch.randint(0, width, (batch,), generator=generator, device=device)
    top, left = centre_y - size // 2, centre_x - size // 2
    rows = torch.arange(height, device=device)[None, :]  # [1, H]
    cols = torch.arange(width, device=device)[None, :]
    inside_rows = (rows >= top[:, None]) & (rows < top[:, None] + size)  # [B, H]
    inside_cols = (cols >= left[:, None]) & (cols < left[:, None] + size)  # [B, W]
    return ~(inside_rows[:, :, None] & inside_cols[:, None, :])[:, None]
