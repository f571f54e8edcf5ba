"""A small multitask model shared by the optimizer tests (imports torch only, for fast workers)."""

from __future__ import annotations

import torch
from torch import nn


class MultiHead(nn.Module):
    """A shared trunk with three heads; head i and its private layer are reached by task i only."""

    def __init__(self, dim: int = 6, tasks: int = 3) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(dim, 8), nn.Tanh())
        self.heads = nn.ModuleList(nn.Sequential(nn.Linear(8, 5), nn.Tanh(), nn.Linear(5, 1)) for _ in range(tasks))
        self.unused = nn.Linear(3, 3)  # in the optimizer, reached by no task

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        h = self.trunk(x)
        return [((head(h).squeeze(-1) - y[:, i]) ** 2).mean() for i, head in enumerate(self.heads)]


def make_model(seed: int = 0, dtype: torch.dtype = torch.float32) -> MultiHead:
    torch.manual_seed(seed)
    return MultiHead().to(dtype)


def batch(seed: int = 0, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=gen), torch.randn(n, 3, generator=gen)


def reached_params(model: MultiHead) -> list[nn.Parameter]:
    return [p for name, p in model.named_parameters() if not name.startswith("unused")]
