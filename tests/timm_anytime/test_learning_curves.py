"""timm_anytime.learning_curves: metrics.jsonl read back, the convergence rule, the plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from timm_anytime.learning_curves import (
    _evaluation_lines,
    _training_lines,
    convergence,
    convergence_table,
    fit_epoch,
    metrics_through,
    plot_learning_curves,
    read_learning_curve,
)


def write_metrics(folder: Path, records: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return folder


def record(epoch: int, lr: float, loss: float, err: float, **extra) -> dict:
    return {"epoch": epoch, "lr": lr, "train_loss": [2 * loss, loss], "train_top1_err": [2 * err, err], **extra}


def test_reads_epochs_evaluations_and_keeps_the_later_record_of_a_repeated_epoch(tmp_path: Path) -> None:
    records = [record(1, 0.1, 2.0, 80.0), record(2, 0.1, 1.5, 60.0, eval_top1_err=[70.0, 65.0])]
    records += [record(2, 0.1, 1.4, 59.0, val_top1_err=[68.0, 64.0]), {"epoch": 2, "note": "no training numbers"}]
    records += [record(3, 0.02, 1.0, 40.0)]
    curve = read_learning_curve(write_metrics(tmp_path / "run", records))
    assert curve.epochs == [1, 2, 3]
    assert curve.lr == [0.1, 0.1, 0.02]
    assert curve.train_err == [[160.0, 80.0], [118.0, 59.0], [80.0, 40.0]]
    assert curve.eval_err == {2: [70.0, 65.0]}
    assert curve.val_err == {2: [68.0, 64.0]}
    assert curve.num_stages == 2


def test_convergence_needs_a_low_error_and_a_flat_loss(tmp_path: Path) -> None:
    # 20 epochs: windows of 2, so the mean loss of epochs 19-20 is compared with that of 17-18.
    def curve_of(losses: list[float], final_err: float):
        records = [record(e + 1, 0.1, loss, 50.0) for e, loss in enumerate(losses)]
        records[-1] = record(len(losses), 0.001, losses[-1], final_err)
        return read_learning_curve(write_metrics(tmp_path / f"r{len(list(tmp_path.iterdir()))}", records))

    flat = [1.0] * 16 + [0.100, 0.102, 0.099, 0.101]  # means 0.101 and 0.100: 1% apart
    assert convergence(curve_of(flat, 1.5)).converged
    assert not convergence(curve_of(flat, 2.5)).converged  # flat but the error is too high
    falling = [1.0] * 16 + [0.100, 0.100, 0.080, 0.080]
    result = convergence(curve_of(falling, 1.0))
    assert result.loss_change == pytest.approx(0.2)  # (0.080 - 0.100) / 0.100
    assert not result.converged
    assert result.final_lr == 0.001
    table = convergence_table({"a": curve_of(flat, 1.5), "b": curve_of(falling, 1.0)})
    # a: 0.100 vs 0.101; both windows' sample variances 2e-6, so 2 SE = 2 * sqrt(2e-6/2 + 2e-6/2) / 0.101
    assert "| a | 20 | 0.001 | 3.00 / 1.50 | 1.0% (2.8%) | yes | never |" in table  # 1.5% at the end: not < 1%
    assert "| b | 20 | 0.001 | 2.00 / 1.00 | 20.0% (0.0%) | **no** | never |" in table


def test_one_epoch_has_no_loss_trend(tmp_path: Path) -> None:
    """One epoch cannot show a flat loss (it used to compare the epoch with itself: "0.0%")."""
    one = read_learning_curve(write_metrics(tmp_path / "one", [record(1, 0.1, 0.01, 0.5)]))
    result = convergence(one)
    assert not result.converged
    assert math.isnan(result.loss_change)
    assert "| one | 1 | 0.1 | 1.00 / 0.50 | n/a (one epoch) | **no** | 1 |" in convergence_table({"one": one})
    # Three epochs: windows of one epoch each (never longer than half the run).
    three = read_learning_curve(write_metrics(tmp_path / "three", [record(e, 0.1, 0.5 / e, 0.5) for e in (1, 2, 3)]))
    assert convergence(three).loss_change == pytest.approx((0.5 / 3 - 0.25) / 0.25 * -1)


def test_fit_epoch_is_where_every_later_10_epoch_mean_stays_under_1_percent(tmp_path: Path) -> None:
    def curve_of(errors: list[float]):
        records = [record(e + 1, 0.1, 1.0, err) for e, err in enumerate(errors)]
        return read_learning_curve(write_metrics(tmp_path / f"r{len(list(tmp_path.iterdir()))}", records))

    # 10% for 15 epochs, then 0.5%: the window starting at epoch 15 averages (10 + 9 * 0.5) / 10 = 1.45
    assert fit_epoch(curve_of([10.0] * 15 + [0.5] * 15)) == 16
    # a spike of 12% at epoch 25 lifts every window holding it to at least (12 + 9 * 0.5) / 10 = 1.65
    assert fit_epoch(curve_of([10.0] * 15 + [0.5] * 9 + [12.0] + [0.5] * 5)) == 26
    assert fit_epoch(curve_of([10.0] * 15 + [0.5] * 15), max_train_err=0.5) is None  # 0.5 is not under 0.5


def test_a_change_inside_the_epoch_noise_is_flat(tmp_path: Path) -> None:
    """Near zero the loss jumps by tens of percent from epoch to epoch: two window means 8% apart
    are flat when the epochs scatter that much, and not when they do not."""

    def curve_of(losses: list[float]):
        records = [record(e + 1, 0.001, loss, 0.5) for e, loss in enumerate(losses)]
        return read_learning_curve(write_metrics(tmp_path / f"r{len(list(tmp_path.iterdir()))}", records))

    noisy = [1.0] * 32 + [0.004, 0.006] * 2 + [0.0035, 0.0055] * 2  # means 0.0050 and 0.0045: 10% apart
    result = convergence(curve_of(noisy))
    assert result.loss_change == pytest.approx(0.1)
    # 2 SE = 2 * sqrt(var(last) / 4 + var(before) / 4) / 0.005: var = 4/3 * 0.001^2 for both windows
    assert result.loss_noise == pytest.approx(2 * (2 * (4 / 3) * 1e-6 / 4) ** 0.5 / 0.005)
    assert result.converged
    steady = [1.0] * 32 + [0.005] * 4 + [0.0045] * 4  # the same 10% drop without scatter: still falling
    assert not convergence(curve_of(steady)).converged


def test_greedy_is_judged_on_the_last_stages_own_phase(tmp_path: Path) -> None:
    """Greedy trains stage 3 for the last 20 of 60 epochs on its own schedule: the windows are 10%
    of those 20 (epochs 59-60 against 57-58), not of all 60 (55-60 against 49-54, which straddle a
    learning-rate drop of stage 3's schedule and see the loss fall)."""

    def greedy(epoch: int) -> dict:
        stage = (epoch - 1) // 20 + 1
        loss = 0.1 if epoch <= 52 else 0.05  # stage 3's last drop after epoch 52, then flat
        return {"epoch": epoch, "lr": 0.01, "train_loss": [loss], "train_top1_err": [1.0], "greedy_stage": stage}

    curve = read_learning_curve(write_metrics(tmp_path / "greedy", [greedy(e) for e in range(1, 61)]))
    assert curve.phase == [1] * 20 + [2] * 20 + [3] * 20
    result = convergence(curve)
    assert result.loss_change == pytest.approx(0.0)
    assert result.converged
    # the plot draws each stage's training error over its own phase, not one line labelled stage 1
    lines = _training_lines(curve)
    assert sorted(lines) == [0, 1, 2]
    assert lines[2][0] == list(range(41, 61))
    assert lines[2][1] == [1.0] * 20
    # test errors are drawn per stage from its own phase on: before it, its exit is an untrained head
    evaluated = [
        {**greedy(e), "eval_top1_err": [60.0, 90.0 - (e > 20) * 30, 90.0 - (e > 40) * 40]} for e in range(1, 61)
    ]
    evaluated = [r if r["epoch"] % 10 == 0 else greedy(r["epoch"]) for r in evaluated]  # every 10 epochs
    evaluated_curve = read_learning_curve(write_metrics(tmp_path / "evaluated", evaluated))
    drawn = _evaluation_lines(evaluated_curve, evaluated_curve.eval_err)
    assert drawn[0] == ([10, 20, 30, 40, 50, 60], [60.0] * 6)
    assert drawn[1] == ([30, 40, 50, 60], [60.0] * 4)  # stage 2's phase starts at epoch 21
    assert drawn[2] == ([50, 60], [50.0] * 2)
    unfinished = read_learning_curve(write_metrics(tmp_path / "unfinished", evaluated[:30]))  # cut in stage 2
    assert sorted(_evaluation_lines(unfinished, unfinished.eval_err)) == [0, 1]  # stage 3 never trained: not drawn
    no_phase = [{k: v for k, v in r.items() if k != "greedy_stage"} for r in evaluated]
    joint_curve = read_learning_curve(write_metrics(tmp_path / "joint_eval", no_phase))
    assert _evaluation_lines(joint_curve, joint_curve.eval_err)[2][0] == [10, 20, 30, 40, 50, 60]  # every evaluation
    # how soon the last stage fitted is also read within its phase: stage 2 ended under 1% too, but
    # its records are not the last stage's
    fitted = [{**greedy(e), "train_top1_err": [5.0 if e <= 30 else 0.5]} for e in range(1, 61)]
    assert fit_epoch(read_learning_curve(write_metrics(tmp_path / "fitted", fitted))) == 41
    # the same records without the phase: the whole run's windows see the drop (0.05 against (4 * 0.1 + 2 * 0.05) / 6)
    joint = [{k: v for k, v in greedy(e).items() if k != "greedy_stage"} for e in range(1, 61)]
    whole = convergence(read_learning_curve(write_metrics(tmp_path / "joint", joint)))
    assert whole.loss_change == pytest.approx(0.4)
    assert not whole.converged


def test_reads_the_weight_average_evaluations_apart_from_the_final_weights(tmp_path: Path) -> None:
    """--model-ema logs ema_eval_* / ema_val_* beside eval_* / val_*: each goes to its own curve."""
    records = [
        record(1, 0.1, 1.0, 50.0, eval_top1_err=[40.0, 30.0], ema_eval_top1_err=[45.0, 35.0]),
        record(2, 0.1, 0.5, 25.0, val_top1_err=[20.0, 10.0], ema_val_top1_err=[22.0, 12.0]),
    ]
    curve = read_learning_curve(write_metrics(tmp_path / "run", records))
    assert curve.eval_err == {1: [40.0, 30.0]}
    assert curve.ema_eval_err == {1: [45.0, 35.0]}
    assert curve.val_err == {2: [20.0, 10.0]}
    assert curve.ema_val_err == {2: [22.0, 12.0]}
    assert _evaluation_lines(curve, curve.ema_eval_err) == {0: ([1], [45.0]), 1: ([1], [35.0])}
    assert plot_learning_curves({"run": curve}, tmp_path / "ema.png").stat().st_size > 0


def test_plot_writes_a_png(tmp_path: Path) -> None:
    records = [record(e, 0.1, 1.0 / e, 50.0 / e, eval_top1_err=[60.0 / e, 55.0 / e]) for e in range(1, 6)]
    curve = read_learning_curve(write_metrics(tmp_path / "run", records))
    path = plot_learning_curves({"run": curve, "again": curve}, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_metrics_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"metrics\.jsonl"):
        read_learning_curve(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"metrics\.jsonl"):
        metrics_through(tmp_path, 1)


def test_metrics_through_keeps_the_epochs_a_checkpoint_has_seen(tmp_path: Path) -> None:
    # epochs 1-3 logged, then an evaluation line of epoch 2 (out of order), a blank line and epoch 4
    lines = [
        '{"epoch": 1, "a": 1}',
        '{"epoch": 2, "a": 2}',
        '{"epoch": 3, "a": 3}',
        '{"epoch": 2, "eval": 9}',
        "",
        '{"epoch": 4}',
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    expected = '{"epoch": 1, "a": 1}\n{"epoch": 2, "a": 2}\n{"epoch": 2, "eval": 9}\n'
    assert metrics_through(tmp_path, 2) == expected  # the run folder
    assert metrics_through(tmp_path / "metrics.jsonl", 2) == expected  # or the file itself
    assert metrics_through(tmp_path, 0) == ""
    assert metrics_through(tmp_path, 4).count("\n") == 5  # every line but the blank one


def test_a_record_still_being_written_is_left_out_and_a_damaged_one_named(tmp_path: Path) -> None:
    """A run killed (or read by a snapshot) while it logs leaves its last line without a newline:
    that record is not there yet. A damaged line before the last is an error naming it."""
    complete = [record(e, 0.1, 1.0 / e, 50.0 / e) for e in (1, 2)]
    path = tmp_path / "metrics.jsonl"
    written = "".join(json.dumps(r) + "\n" for r in complete)
    path.write_text(written + json.dumps(record(3, 0.1, 0.3, 10.0))[:25])  # epoch 3 cut off mid-line
    assert metrics_through(tmp_path, 5) == written
    assert read_learning_curve(tmp_path).epochs == [1, 2]
    path.write_text(written + "\n" + json.dumps(record(3, 0.1, 0.3, 10.0)))  # a whole last line, no newline
    assert read_learning_curve(tmp_path).epochs == [1, 2, 3]
    path.write_text(
        json.dumps(complete[0]) + "\n" + '{"epoch": 2, "tr\n' + json.dumps(record(3, 0.1, 0.3, 10.0)) + "\n"
    )
    for reader in (read_learning_curve, lambda p: metrics_through(p, 5)):
        with pytest.raises(ValueError, match=r"metrics\.jsonl, line 2, is not a JSON record .*delete that line"):
            reader(tmp_path)
