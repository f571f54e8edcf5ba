"""Deadline simulation against a case worked out by hand."""

from __future__ import annotations

import pytest
import torch

from timm_anytime.deadline import anytime_error, deadline_table, oracle_all_error, oracle_each_error

# 2 outputs (stage 1 cheap and worse, stage 2 better), 4 inputs, 10 classes (a guess errs 0.9).
CORRECT = torch.tensor([[1, 0, 1, 0], [1, 1, 1, 0]], dtype=torch.bool)  # accuracy 0.5, 0.75
FINISH = torch.tensor([[1.0, 1.0, 2.0, 5.0], [3.0, 4.0, 4.0, 9.0]])


def test_anytime_uses_the_best_finished_stage_by_hand() -> None:
    # deadline 0.5: nothing ready -> 4 guesses
    assert anytime_error(CORRECT, FINISH, 0.5, 10) == pytest.approx(0.9)
    # deadline 1.5: inputs 0, 1 use stage 1 (right, wrong); inputs 2, 3 guess
    assert anytime_error(CORRECT, FINISH, 1.5, 10) == pytest.approx((0 + 1 + 0.9 + 0.9) / 4)
    # deadline 4: inputs 0, 1, 2 use stage 2 (all right); input 3 guesses
    assert anytime_error(CORRECT, FINISH, 4.0, 10) == pytest.approx(0.9 / 4)
    # deadline 6: input 3 now has stage 1 (wrong)
    assert anytime_error(CORRECT, FINISH, 6.0, 10) == pytest.approx(1 / 4)
    # deadline 10: everything finished: stage 2's error
    assert anytime_error(CORRECT, FINISH, 10.0, 10) == pytest.approx(0.25)


def test_oracles_by_hand() -> None:
    latency = FINISH  # read as two independent networks
    # Oracle_All at 4: network 2 is not ready for input 3 (9 > 4), network 1 not either (5 > 4): guess
    assert oracle_all_error(CORRECT, latency, 4.0, 10) == pytest.approx(0.9)
    # at 5: network 1 is ready for all -> its error 0.5
    assert oracle_all_error(CORRECT, latency, 5.0, 10) == pytest.approx(0.5)
    # at 9: network 2 ready for all -> 0.25
    assert oracle_all_error(CORRECT, latency, 9.0, 10) == pytest.approx(0.25)
    # Oracle_Each at 5: inputs 0-2 use network 2 (right), input 3 network 1 (wrong)
    assert oracle_each_error(CORRECT, latency, 5.0, 10) == pytest.approx(0.25)


def test_table_and_errors() -> None:
    table = deadline_table([1.5, 10.0], 10, anytime={"Nest": (CORRECT, FINISH)}, oracle=(CORRECT, FINISH))
    assert set(table) == {"Nest", "Oracle_All", "Oracle_Each"}
    assert table["Nest"] == pytest.approx([0.7, 0.25])
    with pytest.raises(ValueError, match=r"must both be \[outputs, inputs\]"):
        anytime_error(CORRECT, FINISH[:, :2], 1.0, 10)
