"""Per-stage evaluation against a direct computation; the report's deadline view by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

import timm_anytime  # noqa: F401
from timm_anytime.evaluate import stage_correct, stage_finish_times
from timm_anytime.report import (
    DEADLINE_FRACTIONS,
    deadline_view,
    errorbar_mean_std,
    load_results,
    markdown_table,
    mean_std,
    panel_styles,
    series_styles,
    write_report,
)


def test_stage_correct_matches_a_direct_computation() -> None:
    torch.manual_seed(0)
    model = timm.create_model("anytime_cifar_resnet20_w124", num_classes=10).eval()
    x, y = torch.randn(12, 3, 32, 32), torch.randint(0, 10, (12,))
    top1, top5 = stage_correct(model, [(x[:5], y[:5]), (x[5:], y[5:])])
    assert top1.shape == top5.shape == (3, 12)
    assert top1.dtype == torch.bool
    with torch.no_grad():
        for k in range(1, 4):  # independent path: D_k alone, ranks by sorting
            logits = model.set_active_stage(k)(x)
            order = logits.argsort(dim=1, descending=True)
            assert torch.equal(top1[k - 1], order[:, 0] == y)
            assert torch.equal(top5[k - 1], (order[:, :5] == y[:, None]).any(1))
    model.set_active_stage(3)
    assert not model.training  # the mode is restored
    plain = timm.create_model("cifar_resnet20", num_classes=10).eval()
    top1, _ = stage_correct(plain, [(x, y)])
    assert top1.shape == (1, 12)


def test_finish_times_grow_with_the_stage() -> None:
    model = timm.create_model("anytime_cifar_resnet20_w124", num_classes=10)
    times = stage_finish_times(model, torch.randn(4, 3, 32, 32), warmup=1)
    assert times.shape == (3, 4)
    assert (times > 0).all()
    assert (times[1:] >= times[:-1]).all()  # cumulative: stage k+1 finishes after stage k
    assert model.training  # the mode is restored


def _fake_run(
    folder: Path,
    label: str,
    correct: list[list[int]],
    finish: list[list[float]],
    flops: list[int],
    dataset: str = "toy",
) -> Path:
    folder.mkdir()
    stages = [
        {"stage": k + 1, "top1_err": 100 * (1 - sum(c) / len(c)), "flops": f, "anytime_flops": f}
        for k, (c, f) in enumerate(zip(correct, flops, strict=True))
    ]
    info = {"label": label, "model": label, "num_classes": 10, "eval_inputs": 4, "dataset": dataset, "stages": stages}
    info["hardware"] = "test"
    (folder / "eval.json").write_text(json.dumps(info))
    save_file(
        {"correct": torch.tensor(correct, dtype=torch.uint8), "finish_s": torch.tensor(finish, dtype=torch.float64)},
        str(folder / "eval_outputs.safetensors"),
    )
    return folder


def test_deadline_view_by_hand(tmp_path: Path) -> None:
    # One anytime network (2 stages) and two independent networks, 4 inputs, 10 classes.
    nested = _fake_run(tmp_path / "n", "nested", [[1, 0, 1, 0], [1, 1, 1, 0]], [[1, 1, 2, 5], [3, 4, 4, 9]], [1, 3])
    small = _fake_run(tmp_path / "s", "small", [[1, 0, 0, 0]], [[1, 1, 1, 1]], [1])
    big = _fake_run(tmp_path / "b", "big", [[1, 1, 1, 1]], [[6, 6, 8, 8]], [4])
    deadlines, table = deadline_view(load_results([nested, small, big]))
    # the reference is the largest independent network's mean latency: 7
    assert deadlines == pytest.approx([7 * f for f in DEADLINE_FRACTIONS])
    # at 0.5 x 7 = 3.5: nested -> inputs 0 (stage 2: right), 1 (stage 1: wrong), 2 (stage 1: right), 3 guess
    assert table["nested"][0] == pytest.approx(100 * (0 + 1 + 0 + 0.9) / 4)
    # Oracle_All at 3.5: only "small" is ready for all inputs: error 3/4
    assert table["Oracle_All"][0] == pytest.approx(75.0)
    # Oracle_Each at 7: inputs 0, 1 can use "big" (6 <= 7): right; inputs 2, 3 use "small": wrong
    assert table["Oracle_Each"][-1] == pytest.approx(50.0)


def test_deadline_view_averages_the_seeds_of_a_label(tmp_path: Path) -> None:
    # Two seeds of one anytime setting, by hand at the 0.5 x 7 = 3.5 deadline (as above):
    # seed a: inputs 0 (stage 2: right), 1 (stage 1: wrong), 2 (stage 1: right), 3 (nothing: 0.9)
    # seed b: stage 1 is ready for every input (finish 1) and right on inputs 0, 1 only
    a = _fake_run(tmp_path / "a", "nested", [[1, 0, 1, 0], [1, 1, 1, 0]], [[1, 1, 2, 5], [3, 4, 4, 9]], [1, 3])
    b = _fake_run(tmp_path / "b", "nested", [[1, 1, 0, 0], [1, 1, 1, 1]], [[1, 1, 1, 1], [9, 9, 9, 9]], [1, 3])
    big = _fake_run(tmp_path / "big", "big", [[1, 1, 1, 1]], [[6, 6, 8, 8]], [4])
    _, table = deadline_view(load_results([a, b, big]))
    seed_a, seed_b = 100 * (0 + 1 + 0 + 0.9) / 4, 100 * (0 + 0 + 1 + 1) / 4
    assert table["nested"][0] == pytest.approx((seed_a + seed_b) / 2)
    assert "A row with several runs" in write_report([a, b, big], tmp_path / "report").read_text()


def test_markdown_table_averages_runs_of_one_label(tmp_path: Path) -> None:
    a = _fake_run(tmp_path / "a", "osgd", [[1, 1, 0, 0]], [[1, 1, 1, 1]], [1])
    b = _fake_run(tmp_path / "b", "osgd", [[1, 1, 1, 0]], [[1, 1, 1, 1]], [1])
    table = markdown_table(load_results([a, b]))
    assert "| osgd | osgd | 2 | 37.50 ± 17.68 |" in table


def test_runs_on_different_data_are_not_compared(tmp_path: Path) -> None:
    a = _fake_run(tmp_path / "a", "osgd", [[1, 1, 0, 0]], [[1, 1, 1, 1]], [1])
    b = _fake_run(tmp_path / "b", "sgd", [[1, 1, 1, 0]], [[1, 1, 1, 1]], [1], dataset="other")
    with pytest.raises(ValueError, match="evaluated on different data"):
        load_results([a, b])


def test_deadline_view_with_latency_proportional_to_flops(tmp_path: Path) -> None:
    nested = _fake_run(tmp_path / "n", "nested", [[1, 0, 1, 0], [1, 1, 1, 0]], [[9, 9, 9, 9], [9, 9, 9, 9]], [1, 3])
    small = _fake_run(tmp_path / "s", "small", [[1, 0, 0, 0]], [[9, 9, 9, 9]], [1])
    big = _fake_run(tmp_path / "b", "big", [[1, 1, 1, 1]], [[9, 9, 9, 9]], [4])
    results = load_results([nested, small, big])
    deadlines, table = deadline_view(results, cost="flops")
    assert deadlines == pytest.approx([4 * f for f in DEADLINE_FRACTIONS])  # the largest network: 4 FLOPs
    # at 2 FLOPs the nested network has stage 1 (1 FLOP) for every input: error 50%; Oracle_All: small
    assert (table["nested"][0], table["Oracle_All"][0]) == (pytest.approx(50.0), pytest.approx(75.0))
    # at 4 FLOPs: stage 2 (3 FLOPs) everywhere, and the big network is ready for every input
    assert (table["nested"][-1], table["Oracle_Each"][-1]) == (pytest.approx(25.0), pytest.approx(0.0))
    report = write_report([nested, small, big], tmp_path / "report").read_text()
    assert "latency taken proportional to FLOPs" in report
    assert (tmp_path / "report" / "deadlines_flops.png").stat().st_size > 0


def test_panel_styles_keep_a_label_across_panels_and_apart_within_one() -> None:
    # "a" and "b" share panel 1; "b" and "c" panel 2; "a" and "c" never meet, so "c" may reuse a's colour
    styles = panel_styles([["a", "b"], ["b", "c"], ["a", "d"]])
    assert [styles[k]["color"] for k in "abcd"] == ["C0", "C1", "C0", "C1"]
    crowded = panel_styles([[f"s{i}" for i in range(12)]])  # past 10 in one panel: the next marker/line
    assert len({tuple(style.items()) for style in crowded.values()}) == 12
    assert crowded["s10"]["color"] == "C0"
    assert crowded["s10"]["ls"] != crowded["s0"]["ls"]


def test_plots_keep_more_than_ten_settings_apart() -> None:
    """matplotlib's default cycle repeats after 10 colours: a 16-setting report drew lookalike lines."""
    labels = [f"run{i}" for i in range(16)]
    styles = series_styles(labels)
    assert len({tuple(style.items()) for style in styles.values()}) == 16
    assert [styles[f"run{i}"]["color"] for i in range(10)] == [f"C{i}" for i in range(10)]
    assert styles["run0"]["color"] == styles["run10"]["color"]  # same colour, so another marker and line
    assert (styles["run0"]["marker"], styles["run0"]["ls"]) != (styles["run10"]["marker"], styles["run10"]["ls"])
    bars = series_styles(labels, bars=True)  # bars have no marker or line: the hatch tells them apart
    assert len({tuple(style.items()) for style in bars.values()}) == 16
    assert bars["run0"]["hatch"] != bars["run10"]["hatch"]


def test_mean_std_by_hand() -> None:
    # mean 7/3; sample sd sqrt(((1-7/3)^2 + (2-7/3)^2 + (4-7/3)^2) / 2) = sqrt(7/3) = 1.5275
    assert mean_std([1.0, 2.0, 4.0]) == "2.33 ± 1.53"
    assert mean_std([3.456]) == "3.46"  # one run: its value, no spread claimed


class _RecordingAxes:
    def errorbar(self, x, y, yerr=None, **kwargs):
        self.call = (x, y, yerr, kwargs)


def test_errorbar_mean_std_by_hand() -> None:
    ax = _RecordingAxes()
    errorbar_mean_std(ax, (1, 2), [[1.0, 2.0, 4.0], [5.0]], label="osgd", color="C0")
    x, y, yerr, kwargs = ax.call
    assert x == [1, 2]
    assert y == pytest.approx([7 / 3, 5.0])
    assert yerr == pytest.approx([(7 / 3) ** 0.5, 0.0])  # a single run draws no bar
    assert kwargs["label"] == "osgd"
    assert kwargs["color"] == "C0"
    errorbar_mean_std(ax, (1, 2), [[1.0], [5.0]], label="seed 0")
    assert ax.call[2] is None  # no sample spreads: no bars at all
