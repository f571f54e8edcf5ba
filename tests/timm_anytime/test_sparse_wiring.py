"""Sparse aggregation and interlaced levels against the SPEC's worked example and a brute force."""

from __future__ import annotations

import pytest

from timm_anytime.sparse import interlaced_wiring, sparse_inputs, stage_output_units, unit_levels


def brute_force_levels(num_units: int, levels: int) -> list[int]:
    """Independent construction from the recursive definition: subnetwork s - 1 is the
    odd-numbered units (in subnetwork s's own numbering) of subnetwork s."""
    members = {levels: list(range(1, num_units + 1))}
    for s in range(levels, 1, -1):
        members[s - 1] = [unit for index, unit in enumerate(members[s], start=1) if index % 2 == 1]
    return [min(s for s in range(1, levels + 1) if unit in members[s]) for unit in range(1, num_units + 1)]


def test_sparse_rule_reads_powers_of_two_back() -> None:
    assert sparse_inputs(1) == [0]
    assert sparse_inputs(4) == [3, 2, 0]
    assert sparse_inputs(7) == [6, 5, 3]
    assert sparse_inputs(17) == [16, 15, 13, 9, 1]  # the stage output of a 16-unit stage


def test_spec_worked_example_16_units_3_levels() -> None:
    levels = unit_levels(16, 3)
    assert [p for p in range(1, 17) if levels[p - 1] == 1] == [1, 5, 9, 13]
    assert [p for p in range(1, 17) if levels[p - 1] == 2] == [3, 7, 11, 15]
    assert [p for p in range(1, 17) if levels[p - 1] == 3] == list(range(2, 17, 2))
    unit7 = interlaced_wiring(16, 3)[6]
    assert unit7.level == 2
    assert set(unit7.reads_units) == {5, 3}
    assert unit7.reads_stage_input


@pytest.mark.parametrize("levels", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("num_units", [16, 32, 48])
def test_levels_match_the_recursive_brute_force(num_units: int, levels: int) -> None:
    assert unit_levels(num_units, levels) == brute_force_levels(num_units, levels)


@pytest.mark.parametrize(("num_units", "levels"), [(16, 3), (16, 4), (8, 3), (48, 4), (32, 5)])
def test_no_unit_reads_a_higher_level_and_each_level_is_a_sparse_net_of_its_own(num_units, levels) -> None:
    wiring = interlaced_wiring(num_units, levels)
    level_of = {w.unit: w.level for w in wiring}
    for w in wiring:
        assert all(level_of[u] <= w.level for u in w.reads_units)
        assert all(u < w.unit for u in w.reads_units)  # feed-forward
    for s in range(1, levels + 1):
        # Subnetwork s, renumbered 1..N_s, is exactly a plain sparse network: brute-force check.
        sequence = [w.unit for w in wiring if w.level <= s]
        for coordinate, unit in enumerate(sequence, start=1):
            w = wiring[unit - 1]
            if w.level != s:
                continue
            expected = [q for q in range(coordinate) if coordinate - q in {2**k for k in range(8)}]
            got = sorted([sequence.index(u) + 1 for u in w.reads_units] + ([0] if w.reads_stage_input else []))
            assert got == sorted(expected)
        units, with_input = stage_output_units(num_units, levels, s)
        assert all(level_of[u] <= s for u in units)
        assert with_input == (len(sequence) + 1 in {2**k for k in range(8)})


def test_doubling_levels_double_the_depth() -> None:
    counts = [sum(1 for lv in unit_levels(16, 4) if lv <= s) for s in range(1, 5)]
    assert counts == [2, 4, 8, 16]


def test_bad_sizes_give_clear_errors() -> None:
    with pytest.raises(ValueError, match="must be a multiple of 2\\^\\(levels - 1\\) = 8"):
        unit_levels(12, 4)
    with pytest.raises(ValueError, match="positions start at 1"):
        sparse_inputs(0)
