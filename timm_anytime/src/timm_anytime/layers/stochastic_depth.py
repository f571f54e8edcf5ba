"""Stochastic depth for the residual families, with timm's ResNet rule (``drop_path_rate``)."""

from __future__ import annotations

from timm.layers import DropPath
from torch import nn


def block_drop_paths(drop_path_rate: float, num_blocks: int) -> list[nn.Module | None]:
    """One ``DropPath`` (or ``None`` where its rate is 0) per residual block of a network, in order:
    block i of n drops its branch with probability ``drop_path_rate * i / (n - 1)``, timm's linear
    rule (``timm.models.resnet.make_blocks``), so the first block never drops and the last drops
    at ``drop_path_rate``."""
    if not 0.0 <= drop_path_rate <= 1.0:
        raise ValueError(f"drop_path_rate is a probability in [0, 1] (e.g. 0.1), got {drop_path_rate!r}")
    rates = [drop_path_rate * i / (num_blocks - 1) if num_blocks > 1 else 0.0 for i in range(num_blocks)]
    return [DropPath(rate) if rate > 0.0 else None for rate in rates]
