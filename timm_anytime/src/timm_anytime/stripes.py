"""Width-nesting specs: how each layer's channels split into stripes, one stripe per stage."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class StripeSpec:
    """Relative stripe widths, e.g. ``(1, 1, 2)`` for ``w124`` (subnetworks of width w, 2w, 4w).

    Stage k owns stripe k; subnetwork D_k holds stripes 1..k of every layer.
    """

    widths: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.widths or any(int(w) != w or w <= 0 for w in self.widths):
            raise ValueError(f"stripe widths must be positive integers, got {self.widths}")

    @classmethod
    def parse(cls, name: str) -> StripeSpec:
        """``"w124"`` (power-of-two nesting, any length: w1, w12, w1248, ...) or ``"e1234"``
        (K equal stripes) or an explicit ``"stripes:1,1,2"``."""
        if name.startswith("stripes:"):
            return cls(tuple(int(v) for v in name.split(":", 1)[1].split(",")))
        match = re.fullmatch(r"([we])(\d+)", name)
        if match is None:
            raise ValueError(
                f"unknown width nesting {name!r}: use 'w124' (power-of-two), 'e1234' (equal) or 'stripes:1,1,2'"
            )
        kind, digits = match.groups()
        sizes = [int(d) for d in digits]
        if kind == "w":
            if sizes != [2**i for i in range(len(sizes))]:
                raise ValueError(f"{name!r}: power-of-two nesting lists 1, 2, 4, ... (e.g. 'w124'), got {sizes}")
            return cls(tuple([1] + [2 ** (i - 1) for i in range(1, len(sizes))]))
        if sizes != list(range(1, len(sizes) + 1)):
            raise ValueError(f"{name!r}: even nesting lists 1, 2, 3, ... (e.g. 'e1234'), got {sizes}")
        return cls(tuple([1] * len(sizes)))

    @property
    def num_stages(self) -> int:
        return len(self.widths)

    def splits(self, channels: int) -> tuple[int, ...]:
        """Cumulative channel boundaries ``(0, c_1, c_1 + c_2, ..., channels)``."""
        total = sum(self.widths)
        if channels % total:
            raise ValueError(
                f"{channels} channels cannot be split into stripes {self.widths}: the width must be a "
                f"multiple of {total} (adjust the model's width argument)"
            )
        unit = channels // total
        bounds = [0]
        for w in self.widths:
            bounds.append(bounds[-1] + w * unit)
        return tuple(bounds)

    def dense_fraction(self, stage: int | None = None) -> Fraction:
        """Share of a dense layer's multiply-adds kept by the triangular cut in subnetwork ``stage``:
        ``sum_j s_j (s_1 + ... + s_j)`` with the stripe fractions ``s`` of that subnetwork."""
        stage = self.num_stages if stage is None else stage
        prefix = self.widths[:stage]
        total = sum(prefix)
        kept, running = Fraction(0), 0
        for w in prefix:
            running += w
            kept += Fraction(w, total) * Fraction(running, total)
        return kept
