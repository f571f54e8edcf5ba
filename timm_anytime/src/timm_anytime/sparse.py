"""Sparse aggregation and interlaced depth levels (SPEC section 4): the index arithmetic alone.

Inside one resolution stage, positions are 0 (the stage input) and 1..N (the units). Unit l takes
the sum of the outputs at positions ``l - 2^k >= 0`` (Zhu et al. 2018, with summation instead of
concatenation), and the stage output is that aggregate taken at position N + 1.

Depth nesting interlaces n levels: unit p (1-based) has level 1 if p == 1, otherwise
``n - min(v2(p - 1), n - 1)``. Subnetwork s holds the units of level <= s, so subnetwork s - 1 is
the odd-numbered units of subnetwork s, recursively. A unit aggregates by the sparse rule inside
its own level's unit sequence, so no unit ever reads a unit of a higher level.
"""

from __future__ import annotations

from dataclasses import dataclass


def sparse_inputs(position: int) -> list[int]:
    """Positions aggregated into position ``position``: ``position - 2^k`` for every k with a
    non-negative result, nearest first (0 is the stage input)."""
    if position < 1:
        raise ValueError(f"positions start at 1 (0 is the stage input), got {position}")
    inputs, step = [], 1
    while position - step >= 0:
        inputs.append(position - step)
        step *= 2
    return inputs


def two_adic_valuation(value: int) -> int:
    """v2(value): how many times 2 divides ``value`` (> 0)."""
    if value <= 0:
        raise ValueError(f"v2 needs a positive integer, got {value}")
    count = 0
    while value % 2 == 0:
        value //= 2
        count += 1
    return count


def unit_levels(num_units: int, levels: int) -> list[int]:
    """The level (1..levels) of units 1..num_units."""
    if levels < 1 or num_units < 1:
        raise ValueError(f"need at least one unit and one level, got {num_units} units, {levels} levels")
    if num_units % 2 ** (levels - 1):
        raise ValueError(
            f"{num_units} units cannot be interlaced into {levels} levels: the count must be a multiple "
            f"of 2^(levels - 1) = {2 ** (levels - 1)} (use fewer levels or more units)"
        )
    return [1 if p == 1 else levels - min(two_adic_valuation(p - 1), levels - 1) for p in range(1, num_units + 1)]


@dataclass(frozen=True)
class UnitWiring:
    """Where one unit of an interlaced stage takes its input from.

    Attributes:
        unit: 1-based unit index in the full network.
        level: The subnetwork that introduces the unit.
        reads_stage_input: Whether the aggregate includes ``level``'s own stage input.
        reads_units: Full-network indices of the units whose outputs are summed, nearest first.
    """

    unit: int
    level: int
    reads_stage_input: bool
    reads_units: tuple[int, ...]


def interlaced_wiring(num_units: int, levels: int) -> list[UnitWiring]:
    """The wiring of every unit of one resolution stage with ``levels`` interlaced levels."""
    level_of = unit_levels(num_units, levels)
    wiring = []
    for unit, level in enumerate(level_of, start=1):
        sequence = [p for p, lv in enumerate(level_of, start=1) if lv <= level]  # subnetwork `level`
        coordinate = sequence.index(unit) + 1
        positions = sparse_inputs(coordinate)
        wiring.append(
            UnitWiring(
                unit=unit,
                level=level,
                reads_stage_input=0 in positions,
                reads_units=tuple(sequence[q - 1] for q in positions if q > 0),
            )
        )
    return wiring


def stage_output_units(num_units: int, levels: int, subnetwork: int) -> tuple[tuple[int, ...], bool]:
    """What subnetwork ``subnetwork``'s stage output sums: (units, whether its stage input too)."""
    level_of = unit_levels(num_units, levels)
    sequence = [p for p, lv in enumerate(level_of, start=1) if lv <= subnetwork]
    positions = sparse_inputs(len(sequence) + 1)
    return tuple(sequence[q - 1] for q in positions if q > 0), 0 in positions
