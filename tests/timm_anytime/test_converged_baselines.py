"""examples/cifar_cpu/baselines.py: the converged protocol's anytime baselines, error against FLOPs
and under FLOPs deadlines (claims (c) and (e)), checked against errors worked out by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from tests.scripts import ROOT, load_script
from timm_anytime.train.config import config_from_args

sys.path.insert(0, str(ROOT / "examples"))  # the script imports its plans from examples/cifar_cpu/
from cifar_cpu import baselines, converged, runs

reproduce = load_script("examples/reproduce_cifar_cpu.py")

INPUTS, CLASSES = 10, 10
M = 1e6  # the summaries print MFLOPs
GUESS = 100 * (1 - 1 / CLASSES)  # a random guess when no stage is ready: 90% expected error


def _evaluated_run(results: Path, name: str, stages: list[tuple[float, int]]) -> None:
    """A finished run whose stage k costs ``stages[k][0]`` cumulative MFLOPs and is right on the
    first ``stages[k][1]`` of the INPUTS test images."""
    run = results / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": "m", "method": "osgd"}))
    info = {
        "dataset": "cifar10",
        "eval_inputs": INPUTS,
        "num_classes": CLASSES,
        "model": "m",
        "epoch": "300",
        "stages": [
            {"top1_err": 100 * (1 - right / INPUTS), "flops": flops * M, "anytime_flops": flops * M}
            for flops, right in stages
        ],
    }
    (run / "eval.json").write_text(json.dumps(info))
    correct = torch.tensor([[i < right for i in range(INPUTS)] for _, right in stages])
    save_file(
        {"correct": correct, "finish_s": torch.zeros(len(stages), 2, dtype=torch.float64)},
        str(run / "eval_outputs.safetensors"),
    )
    errors = [stage["top1_err"] for stage in info["stages"]]
    records = [
        {"epoch": e, "lr": 0.05, "train_loss": [1.0 / e] * len(stages), "train_top1_err": [50.0 / e] * len(stages)}
        for e in (1, 2, 3)
    ]
    records[-1]["eval_top1_err"] = errors
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records))


def _width_design(results: Path) -> None:
    """Two seeds of the nested network (stages at 10, 20, 40 MFLOPs), the even-width baseline (25,
    28, 30, 45) and three FLOP-matched Oracles (10, 20, 38). The seven deadlines are 0.5x to 1x the
    nested network's 40 MFLOPs: 20, 23.3, 26.7, 30, 33.3, 36.7 and 40."""
    for seed, extra in enumerate((0, 1)):
        _evaluated_run(results, f"w_osgd_lr0.05_s{seed}", [(10, 5), (20, 6 + extra), (40, 8)])
        _evaluated_run(results, f"w_even_osgd_lr0.05_s{seed}", [(25, 5), (28, 7 - extra), (30, 9), (45, 10)])
        for k, (flops, right) in enumerate([(10, 6), (20, 7), (38, 9 - extra)], start=1):
            _evaluated_run(results, f"w_oracle{k}_lr0.05_s{seed}", [(flops, right)])


def test_the_plan_trains_each_designs_baseline_with_osgd_then_sgd_for_three_seeds(tmp_path: Path) -> None:
    plan = converged.converged_plan()
    names = [n for n in plan if baselines.is_baseline(runs.label(n))]
    assert names == [
        f"{tag}_{prefix}_{method}_lr0.05_s{seed}"
        for method in ("osgd", "sgd")
        for seed in (0, 1, 2)
        for tag, prefix in (("w", "even"), ("d", "eann"))
    ]
    # after every run the plan had before them (it resumes in order); only the width-depth designs,
    # registered later, follow them
    order = list(plan)
    after = order[order.index(names[-1]) + 1 :]
    assert order[order.index(names[0]) : order.index(names[-1]) + 1] == names
    assert after
    assert all(runs.design_tag(n) in ("wdsim", "wdalt") for n in after)
    for name in names:
        cfg = config_from_args(reproduce.commands(name, plan[name], "D", tmp_path, converged.CONVERGED)[0][1:])
        expected = "anytime_cifar_resnet20_e1234" if name[0] == "w" else "eann_cifar_sparse_resnet50"
        assert (cfg.model, cfg.method, cfg.lr, cfg.epochs) == (expected, name.split("_")[2], 0.05, 300), name
    assert not baselines.is_baseline("osgd_lr0.05")
    assert not baselines.is_baseline("oracle1_lr0.05")


def test_deadline_errors_take_the_best_ready_stage_or_a_guess(tmp_path: Path) -> None:
    _width_design(tmp_path)
    deadlines, table = baselines.deadline_errors(baselines.evaluated(tmp_path, "w"), "w", "0.05")
    assert deadlines == pytest.approx([40 * M * f for f in (0.5, 7 / 12, 2 / 3, 0.75, 5 / 6, 11 / 12, 1.0)])
    # nested: stage 2 (20 MFLOPs) is ready from the first deadline, stage 3 only at 40
    assert table["osgd_lr0.05"]["0"] == pytest.approx([40.0] * 6 + [20.0])
    assert table["osgd_lr0.05"]["1"] == pytest.approx([30.0] * 6 + [20.0])
    # even-width: nothing before 25 MFLOPs (a guess), stage 1 at 26.7 (stage 2 needs 28), stage 3
    # (the best ready) from 30; its stage 4 (45) never
    assert table["even_osgd_lr0.05"]["0"] == pytest.approx([GUESS, GUESS, 50.0, 10.0, 10.0, 10.0, 10.0])
    assert table["even_osgd_lr0.05"]["1"] == pytest.approx([GUESS, GUESS, 50.0, 10.0, 10.0, 10.0, 10.0])
    # Oracle_All: the best network ready for every input (Oracle_Each would equal it: FLOPs are alike
    # for every input)
    assert table["Oracle_All"]["0"] == pytest.approx([30.0] * 6 + [10.0])
    assert table["Oracle_All"]["1"] == pytest.approx([30.0] * 6 + [20.0])
    assert set(table) == {"osgd_lr0.05", "even_osgd_lr0.05", "Oracle_All"}


def test_the_summary_tables_flops_and_merges_deadlines_that_answer_alike(tmp_path: Path) -> None:
    _width_design(tmp_path)
    flops = baselines.flops_summary(tmp_path, "0.05")
    # the baseline's stage 2: 30% and 40% wrong at 28 MFLOPs -> 35 +/- 7.07
    assert (
        "| w | even_osgd_lr0.05 | 0,1 | 25.0: 50.00 ± 0.00 / 28.0: 35.00 ± 7.07 / 30.0: 10.00 ± 0.00 "
        "/ 45.0: 0.00 ± 0.00 |" in flops
    )
    assert "| w | oracle3_lr0.05 | 0,1 | 38.0: 15.00 ± 7.07 |" in flops
    text = baselines.deadline_summary(tmp_path, "0.05")
    assert "| scheme | seeds | 20.0 | 23.3 | 26.7 | 30.0 | 33.3 | 36.7 | 40.0 |" in text
    assert "| osgd_lr0.05 | 0,1 | 35.00 ± 7.07 | 35.00 ± 7.07 |" in text
    row = next(x for x in text.splitlines() if x.startswith("| osgd_lr0.05 - even_osgd_lr0.05 |"))
    cells = row.split("|")[2].strip().split("<br>")
    # both answer alike at 20-23.3 (nested stage 2, a guess) and at 30-36.7 (stage 2, stage 3)
    assert [c.split(":")[0] for c in cells] == ["20.0-23.3", "26.7", "30.0-36.7", "40.0"]
    assert cells[0].startswith("20.0-23.3: -55.00 (95% CI")  # 35 +/- 7.07 against 90, 90
    assert cells[3] == "40.0: +10.00 (no spread across seeds: untestable)"  # 20, 20 against 10, 10
    assert "| osgd_lr0.05 - Oracle_All |" in text
    assert "| even_osgd_lr0.05 - Oracle_All |" in text
    assert "| sgd_lr0.05 -" not in text  # no sgd runs: no row


def test_comparison_plot_leaves_the_baselines_to_their_own_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.figure import Figure

    _width_design(tmp_path)
    figures: list[Figure] = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (figures.append(fig), save(fig, *a, **k))[1])
    paths = converged.plot_converged(tmp_path)
    assert [p.name for p in paths] == ["comparison.png", "learning_curves.png", "baselines.png"]
    assert paths[2].stat().st_size > 10_000

    def legends(figure: Figure) -> set[str]:
        return {c.get_label().split(" ")[0] for ax in figure.axes for c in ax.containers}

    # comparison.png sets stages side by side by index: the baseline's 4 stages at other FLOPs stay out
    assert legends(figures[0]) == {"osgd_lr0.05", "oracle"}
    assert legends(figures[2]) == {"osgd_lr0.05", "even_osgd_lr0.05", "oracle", "Oracle_All"}
