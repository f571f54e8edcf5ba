"""Width-depth schedules (SPEC section 5): which stage owns each (depth level, width stripe) cell.

A schedule lists each stage's width and depth as power-of-two factors, e.g. the paper's
alternating ``"w1d1,w2d1,w2d2,w4d2,w4d4"`` and simultaneous ``"w1d1,w2d2,w4d4"``. Factor 2^(i-1)
is level i: width level j is stripe j of the power-of-two width nesting (stripes 1, 1, 2, 4, ...
of the full width), depth level l is the l-th interlaced depth level (SPEC section 4).

Stage s runs the units of depth level <= d_s at the stripes <= w_s. A body cell (a unit, or a
transition, of depth level l; stripe j) belongs to the first stage whose levels cover it. The final
BatchNorm of depth level l is read only by the stages whose depth is exactly l, so its stripe j
belongs to the first of those that is at least j wide (and to no stage if none is).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_STAGE = re.compile(r"w(\d+)d(\d+)")


def _level(factor: int, what: str, text: str) -> int:
    if factor < 1 or factor & (factor - 1):
        raise ValueError(f"{text!r}: the {what} factor must be a power of two (1, 2, 4, ...), got {factor}")
    return factor.bit_length()


@dataclass(frozen=True)
class WidthDepthSchedule:
    """Stages as (width level, depth level) pairs, 1-based, growing in both and strictly overall."""

    stages: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("a width-depth schedule needs at least one stage")
        for (w0, d0), (w1, d1) in zip(self.stages, self.stages[1:], strict=False):
            if w1 < w0 or d1 < d0 or (w1, d1) == (w0, d0):
                raise ValueError(
                    f"schedule {self.name!r} is not nested: each stage must keep or grow both width and depth, "
                    f"and grow at least one (e.g. 'w1d1,w2d1,w2d2')"
                )

    @classmethod
    def parse(cls, text: str) -> WidthDepthSchedule:
        """``"w1d1,w2d1,w2d2"``: comma-separated stages of width and depth factors."""
        stages = []
        for part in text.replace(" ", "").split(","):
            match = _STAGE.fullmatch(part)
            if match is None:
                raise ValueError(
                    f"bad width-depth stage {part!r} in {text!r}: write each stage as w<factor>d<factor>, "
                    f"e.g. 'w1d1,w2d1,w2d2,w4d2,w4d4'"
                )
            stages.append((_level(int(match[1]), "width", text), _level(int(match[2]), "depth", text)))
        return cls(tuple(stages))

    @property
    def name(self) -> str:
        return ",".join(f"w{2 ** (w - 1)}d{2 ** (d - 1)}" for w, d in self.stages)

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def width_levels(self) -> int:
        return self.stages[-1][0]

    @property
    def depth_levels(self) -> int:
        return self.stages[-1][1]

    def width(self, stage: int) -> int:
        return self.stages[stage - 1][0]

    def depth(self, stage: int) -> int:
        return self.stages[stage - 1][1]

    def body_owner(self, depth_level: int, stripe: int) -> int:
        """The first stage running cell (depth level, stripe) of a unit or transition."""
        return next(s for s, (w, d) in enumerate(self.stages, start=1) if w >= stripe and d >= depth_level)

    def head_norm_owner(self, depth_level: int, stripe: int) -> int:
        """The first stage reading stripe ``stripe`` of depth level ``depth_level``'s final BatchNorm
        (0: no stage reads it)."""
        return next(
            (s for s, (w, d) in enumerate(self.stages, start=1) if d == depth_level and w >= stripe),
            0,
        )
