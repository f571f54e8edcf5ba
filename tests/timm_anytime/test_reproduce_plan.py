"""examples/reproduce_cifar_cpu.py: every planned run is a valid anytime-train command, and the
summary pools seeds correctly."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml

import timm_anytime  # noqa: F401
from tests.scripts import ROOT, load_script
from timm_anytime.train.config import config_from_args

EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))  # the script imports its plans from examples/cifar_cpu/, as when run
from cifar_cpu import checkpoints, converged, runs, underfit  # noqa: E402

reproduce = load_script("examples/reproduce_cifar_cpu.py")


def test_every_planned_run_is_a_valid_command(tmp_path: Path) -> None:
    plan = underfit.plan()
    assert {"w_sgd_s0", "w_osgd_s0", "d_sgd_s0", "d_osgd_s0", "w_osgd_mean_s0", "d_osgd_s2"} <= set(plan)
    for name, flags in plan.items():
        steps = reproduce.commands(name, flags, str(tmp_path), tmp_path / "runs")
        cfg = config_from_args(steps[0][1:])  # the flags after "anytime-train"
        assert timm.is_model(cfg.model), name
        assert cfg.name == runs.label(name)  # seeds of one setting share a report label
        if runs.is_sweep(name):  # trained on 400 per class, chosen on the next 100, never tested
            assert (cfg.train_per_class, cfg.val_per_class, cfg.epochs) == (400, 100, 10), name
            assert len(steps) == 1, name
            continue
        # greedy_e30: the protocol's 10 epochs for each of the 3 stages (greedy splits --epochs)
        assert (cfg.train_per_class, cfg.val_per_class, cfg.epochs) == (500, None, 30 if "_e30_" in name else 10), name
        assert steps[1][:2] == ["anytime-eval", str(tmp_path / "runs" / name)]


def test_labels_group_seeds_and_keep_settings_apart() -> None:
    labels = {name: runs.label(name) for name in underfit.plan()}
    assert labels["w_osgd_s0"] == labels["w_osgd_s2"] == "osgd"
    assert labels["w_osgd_mean_s0"] == "osgd_mean"
    assert labels["oracle_w0.25"] == "oracle_w0.25"
    assert len({labels[n] for n in labels if n.startswith("oracle")}) == 6


def _result(folder: Path, name: str, method: str, errors: list[float], later: list[float] | None = None) -> None:
    run = folder / name
    run.mkdir(parents=True)
    cfg = {"model": "anytime_cifar_resnet20_w124", "model_kwargs": {}, "method": method}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "eval.json").write_text(json.dumps({"epoch": "10", "stages": [{"top1_err": e} for e in errors]}))
    lines = [{"epoch": 10, "eval_top1_err": errors}] + ([{"epoch": 12, "eval_top1_err": later}] if later else [])
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines))


def test_summary_pools_seeds_and_prefers_the_latest_evaluation(tmp_path: Path) -> None:
    results = tmp_path / "cpu"
    _result(results, "w_sgd_s0", "sgd", [30.0, 20.0, 10.0])
    _result(results, "w_sgd_s1", "sgd", [40.0, 30.0, 20.0])
    _result(results, "w_osgd_mean_s0", "osgd", [50.0, 40.0, 30.0], later=[45.0, 35.0, 25.0])
    table = underfit.summary([results])
    # mean and sample standard deviation of (30, 40): 35 and 7.07; the paper's SGD row beside it
    assert "| w_sgd | sgd | 10 | 2 | 35.00 ± 7.07 / 25.00 ± 7.07 / 15.00 ± 7.07 | 12.2 / 10.1 / 9.8 |" in table
    # an evaluation cut short: metrics.jsonl's later epoch wins; an ablation gets no paper row
    assert "| w_osgd_mean | osgd | 12 | 1 | 45.00 / 35.00 / 25.00 |  |" in table


def test_calibrated_norm_runs_get_their_c_and_the_papers_row(tmp_path: Path) -> None:
    plan = underfit.plan()
    for tag in ("w", "d"):
        for method in ("normsgd", "osgd_norm"):
            train, _ = reproduce.commands(f"{tag}_{method}_cal_s0", plan[f"{tag}_{method}_cal_s0"], "D", tmp_path)
            cfg = config_from_args(train[1:])
            assert (cfg.method, cfg.norm_scale) == (method, underfit.CALIBRATED_C[tag])
    _result(tmp_path / "cpu", "w_normsgd_cal_s0", "normsgd", [60.0, 50.0, 40.0])
    # C was calibrated, as in the paper: the paper's NormSGD row stands beside it
    assert "| w_normsgd_cal | normsgd | 10 | 1 | 60.00 / 50.00 / 40.00 | 12.3 / 10.1 / 10.1 |" in underfit.summary(
        [tmp_path / "cpu"]
    )


def test_greedy_with_the_full_schedule_per_stage_gets_the_papers_row(tmp_path: Path) -> None:
    plan = underfit.plan()
    assert {"w_greedy_e30_s0", "d_greedy_e30_s0"} <= set(plan)
    assert runs.label("w_greedy_e30_s0") == "greedy_e30"  # its own report label, apart from greedy
    _result(tmp_path / "cpu", "w_greedy_e30_s0", "greedy", [60.0, 50.0, 40.0])
    _result(tmp_path / "cpu", "w_greedy_s0", "greedy", [70.0, 60.0, 50.0])
    table = underfit.summary([tmp_path / "cpu"])
    assert "| w_greedy_e30 | greedy | 10 | 1 | 60.00 / 50.00 / 40.00 | 10.2 / 9.9 / 9.2 |" in table
    assert "| w_greedy | greedy | 10 | 1 | 70.00 / 60.00 / 50.00 | 10.2 / 9.9 / 9.2 |" in table
    # an ablation keeps no paper row
    _result(tmp_path / "cpu", "w_osgd_mean_s0", "osgd", [1.0, 2.0, 3.0])
    assert "| w_osgd_mean | osgd | 10 | 1 | 1.00 / 2.00 / 3.00 |  |" in underfit.summary([tmp_path / "cpu"])


def test_summed_sgd_runs_take_osgds_step_with_the_same_decay_step(tmp_path: Path) -> None:
    """SGD on the sum of 3 stage losses = lr x3 on their mean, with weight decay /3 (lr x wd kept)."""
    plan = underfit.plan()
    base = config_from_args(reproduce.commands("w_sgd_s0", plan["w_sgd_s0"], "D", tmp_path)[0][1:])
    for tag in ("w", "d"):
        for seed in (0, 1, 2):
            name = f"{tag}_sgd_sum_s{seed}"
            cfg = config_from_args(reproduce.commands(name, plan[name], "D", tmp_path)[0][1:])
            assert (cfg.method, cfg.seed) == ("sgd", seed)
            assert cfg.lr == pytest.approx(3 * base.lr)
            assert cfg.lr * cfg.weight_decay == pytest.approx(base.lr * base.weight_decay, rel=1e-5)


def test_runs_refuse_a_dirty_tree_unless_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    (repo / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "a"], cwd=repo, check=True)
    monkeypatch.setattr(reproduce, "REPO", repo)
    reproduce.require_clean_tree(allow_dirty=False)  # clean: no error
    (repo / "a.py").write_text("x = 2\n")
    with pytest.raises(SystemExit, match=r"uncommitted changes \(a.py"):
        reproduce.require_clean_tree(allow_dirty=False)
    reproduce.require_clean_tree(allow_dirty=True)
    (repo / "a.py").write_text("x = 1\n")
    # the queue's own results, written while it runs, do not make the tree dirty; anything else does
    (repo / "results" / "converged" / "w_sgd_s0").mkdir(parents=True)
    (repo / "results" / "converged" / "w_sgd_s0" / "eval.json").write_text("{}")
    reproduce.require_clean_tree(allow_dirty=False, results=repo / "results" / "converged")
    with pytest.raises(SystemExit, match=r"results/converged/w_sgd_s0/eval\.json"):
        reproduce.require_clean_tree(allow_dirty=False, results=repo / "results" / "other")


def test_sweep_summary_chooses_the_lowest_mean_validation_error(tmp_path: Path) -> None:
    runs = {"0.05": [60.0, 50.0, 40.0], "0.1": [55.0, 50.0, 44.0], "0.2": [70.0, 60.0, 50.0]}
    for lr, errors in runs.items():
        run = tmp_path / f"sweep_w_sgd_lr{lr}"
        run.mkdir()
        lines = [{"epoch": 5, "val_top1_err": [99.0, 99.0, 99.0]}, {"epoch": 10, "val_top1_err": errors}]
        (run / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    table = underfit.sweep_summary(tmp_path).splitlines()
    chosen = [row for row in table if "**yes**" in row]
    assert len(chosen) == 1
    assert "| w | sgd | 0.1 | 55.00 / 50.00 / 44.00 | 49.67 |" in chosen[0]  # not 0.05's lower last stage


def test_converged_protocol_runs_are_valid_commands_that_validate_and_test(tmp_path: Path) -> None:
    plan = converged.converged_plan(tmp_path)
    assert list(plan)[:2] == ["w_sgd_lr0.05_s0", "w_osgd_lr0.05_s0"]  # the pilot's lr first
    for name, flags in plan.items():
        steps = reproduce.commands(name, flags, "D", tmp_path / "runs", converged.CONVERGED)
        cfg = config_from_args(steps[0][1:])
        # trained on images 1-100 of each class, validated on 101-200, tested on the full test split
        assert (cfg.train_per_class, cfg.val_per_class, cfg.eval_per_class) == (100, 100, None), name
        # greedy splits --epochs over its 3 stages: the whole 300-epoch schedule for each
        assert (cfg.epochs, cfg.batch_size) == (900 if cfg.method == "greedy" else 300, 64), name
        assert steps[1][:2] == ["anytime-eval", str(tmp_path / "runs" / name)]
        assert f"--lr={cfg.lr:g}" in flags or "sum" in name, name
    summed = config_from_args(
        reproduce.commands("d_sgd_sum_lr0.05_s2", plan["d_sgd_sum_lr0.05_s2"], "D", tmp_path)[0][1:]
    )
    assert summed.lr * summed.weight_decay == pytest.approx(0.05 * 5e-4, rel=1e-5)  # the decay step of lr 0.05
    assert (summed.lr, summed.seed) == (pytest.approx(0.15), 2)


def test_checkpoint_runs_train_osgd_on_all_images_with_the_papers_schedule_shape(tmp_path: Path) -> None:
    plan = checkpoints.plan()
    assert list(plan) == [
        "w_osgd_s0",
        "d_osgd_s0",
        "control_resnet20_sgd_s0",
        "control_resnet20_sgd_e200_cutout16_s0",
        "d_osgd_cutout16_s0",
        "d_osgd_e200_cutout16_s0",
        "w_osgd_e200_cutout16_s0",
        "d_osgd_e200_cutout16_mixup1_s0",
    ]
    models, cutouts, mixups, averaged = {}, {}, {}, set()
    for name, flags in plan.items():
        steps = reproduce.commands(name, flags, "D", tmp_path / "runs", checkpoints.CHECKPOINTS)
        cfg = config_from_args(steps[0][1:])
        models[name], cutouts[name], mixups[name] = cfg.model, cfg.cutout, cfg.mixup
        if cfg.model_ema:
            averaged.add(name)
        method = "sgd" if name.startswith("control") else "osgd"
        assert (cfg.train_per_class, cfg.val_per_class, cfg.eval_per_class) == (None, None, None), name
        assert (cfg.method, cfg.lr, cfg.batch_size, cfg.momentum, cfg.weight_decay) == (method, 0.1, 128, 0.9, 5e-4)
        # the paper's 200 epochs for the e200 candidates, with the same shape (x0.2 after 30/60/80%)
        epochs, milestones = (200, [60, 120, 160]) if "_e200_" in name else (100, [30, 60, 80])
        assert (cfg.epochs, cfg.sched, cfg.decay_rate, cfg.milestones(cfg.epochs)) == (
            epochs,
            "multistep",
            0.2,
            milestones,
        ), name
        assert steps[1][:2] == ["anytime-eval", str(tmp_path / "runs" / name)]
    assert models == {
        "w_osgd_s0": runs.WIDTH,
        "d_osgd_s0": runs.DEPTH,
        "control_resnet20_sgd_s0": "cifar_resnet20",
        "control_resnet20_sgd_e200_cutout16_s0": "cifar_resnet20",
        "d_osgd_cutout16_s0": runs.DEPTH,
        "d_osgd_e200_cutout16_s0": runs.DEPTH,
        "w_osgd_e200_cutout16_s0": runs.WIDTH,
        "d_osgd_e200_cutout16_mixup1_s0": runs.DEPTH,
    }
    assert cutouts == {
        "w_osgd_s0": 0,
        "d_osgd_s0": 0,
        "control_resnet20_sgd_s0": 0,
        "control_resnet20_sgd_e200_cutout16_s0": 16,
        "d_osgd_cutout16_s0": 16,
        "d_osgd_e200_cutout16_s0": 16,
        "w_osgd_e200_cutout16_s0": 16,
        "d_osgd_e200_cutout16_mixup1_s0": 16,
    }
    # the Mixup run changes only --mixup against the run it builds on (--model-ema only watches)
    assert {name: alpha for name, alpha in mixups.items() if alpha} == {"d_osgd_e200_cutout16_mixup1_s0": 1.0}
    assert checkpoints.CANDIDATE_OF["d_osgd_e200_cutout16_mixup1_s0"] == "d_osgd_e200_cutout16_s0"
    # --model-ema watches only: the trained weights are the same without it
    assert averaged == {
        "w_osgd_e200_cutout16_s0",
        "d_osgd_e200_cutout16_mixup1_s0",
        "control_resnet20_sgd_e200_cutout16_s0",
    }


def test_the_checkpoint_control_is_the_last_stage_of_the_width_nested_checkpoint() -> None:
    """The control isolates the nesting: the plain network it trains is the one ResNet-20 w124's
    last stage extracts to (the same class and tensors; the nesting zeroes the upper blocks)."""
    import timm

    control_model = next(f for f in checkpoints.plan()["control_resnet20_sgd_s0"] if f.startswith("--model="))
    control = timm.create_model(control_model.split("=", 1)[1])
    last_stage = timm.create_model(runs.WIDTH).extract_stage(3)
    assert type(last_stage) is type(control)
    assert {k: v.shape for k, v in last_stage.state_dict().items()} == {
        k: v.shape for k, v in control.state_dict().items()
    }


def _val_run(results: Path, name: str, val: list[float]) -> None:
    run = results / name
    run.mkdir(parents=True)
    records = [{"epoch": 50, "val_top1_err": [99.0] * 3}, {"epoch": 300, "val_top1_err": val}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    (run / "eval.json").write_text("{}")


def test_converged_seeds_follow_the_lr_chosen_on_the_validation_split(tmp_path: Path) -> None:
    _val_run(tmp_path, "w_sgd_lr0.05_s0", [50.0, 50.0, 50.0])
    _val_run(tmp_path, "w_sgd_lr0.1_s0", [40.0, 45.0, 50.0])
    assert converged.chosen_lr(tmp_path, "w", "sgd") is None  # 0.025 has not run: no choice yet
    assert "w_sgd_lr0.1_s1" not in converged.converged_plan(tmp_path)
    _val_run(tmp_path, "w_sgd_lr0.025_s0", [60.0, 45.0, 35.0])  # lowest last stage, not lowest mean
    assert converged.chosen_lr(tmp_path, "w", "sgd") == "0.1"
    plan = converged.converged_plan(tmp_path)
    assert {"w_sgd_lr0.1_s1", "w_sgd_lr0.1_s2", "w_sgd_lr0.05_s1"} <= set(plan)  # chosen, and the ablation's lr
    assert "w_sgd_lr0.025_s1" not in plan


def test_a_run_s_results_appear_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_one copies a finished run's files into results/NAME, whose eval.json says "done" to every
    later worker: a copy cut off halfway must not look done, and the next worker's copy replaces it."""
    run_dirs, results = tmp_path / "runs", tmp_path / "results"
    (run_dirs / "w_osgd_s0").mkdir(parents=True)
    files = ("config.yaml", "metrics.jsonl", "eval.json", "eval_outputs.safetensors", "environment.jsonl")
    for file in files:
        (run_dirs / "w_osgd_s0" / file).write_text(file)
    monkeypatch.setattr(reproduce.subprocess, "run", lambda *args, **kwargs: None)  # trained and evaluated
    flags = underfit.plan()["w_osgd_s0"]
    copy = reproduce.shutil.copy2

    def cut_off(source, target):
        if Path(source).name == "environment.jsonl":
            raise KeyboardInterrupt
        return copy(source, target)

    monkeypatch.setattr(reproduce.shutil, "copy2", cut_off)
    with pytest.raises(KeyboardInterrupt):
        reproduce.run_one("w_osgd_s0", flags, "DATA", run_dirs, results, [], "repro")
    assert not reproduce.is_done(results, "w_osgd_s0")
    assert runs.finished_runs(results) == []  # nor does the cut-off copy count as a finished run

    monkeypatch.setattr(reproduce.shutil, "copy2", copy)
    reproduce.run_one("w_osgd_s0", flags, "DATA", run_dirs, results, [], "repro")
    assert reproduce.is_done(results, "w_osgd_s0")
    assert sorted(p.name for p in results.iterdir()) == ["w_osgd_s0"]
    assert sorted(p.name for p in (results / "w_osgd_s0").iterdir()) == sorted([*files, "commands.txt"])


def test_a_claimed_run_is_skipped_by_other_workers(tmp_path: Path) -> None:
    lock = reproduce.claim(tmp_path / "runs" / "w_sgd_lr0.05_s0.lock")
    assert lock is not None
    assert reproduce.claim(tmp_path / "runs" / "w_sgd_lr0.05_s0.lock") is None
    lock.close()  # released when the worker exits
    again = reproduce.claim(tmp_path / "runs" / "w_sgd_lr0.05_s0.lock")
    assert again is not None
    again.close()


def test_list_says_which_runs_are_done_running_started_or_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    results, folder = tmp_path / "results", tmp_path / "runs"
    (results / "w_sgd_sum_lr0.05_s0").mkdir(parents=True)
    (results / "w_sgd_sum_lr0.05_s0" / "eval.json").write_text("{}")
    (folder / "w_osgd_lr0.05_s0").mkdir(parents=True)  # cut off after two epochs, no worker now
    (folder / "w_osgd_lr0.05_s0" / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n')
    (folder / "w_osgd_lr0.05_s0.lock").touch()  # a lock file nobody holds
    held = reproduce.claim(folder / "w_sgd_lr0.1_s0.lock")  # a worker on it
    argv = ["reproduce_cifar_cpu.py", "--protocol", "converged", "--results", str(results), "--runs", str(folder)]
    monkeypatch.setattr(sys, "argv", [*argv, "--list"])
    reproduce.main()
    held.close()
    lines = {
        line.split(":")[0].rsplit("  ", 1)[1]: line.split("  ")[0] for line in capsys.readouterr().out.splitlines()
    }
    assert lines["w_sgd_sum_lr0.05_s0"] == "done"
    assert lines["w_osgd_lr0.05_s0"] == "started, epoch 2"
    assert lines["w_sgd_lr0.1_s0"] == "running"
    assert lines["d_sgd_lr0.05_s0"] == "todo"
    assert not (folder / "d_sgd_lr0.05_s0.lock").exists()  # listing creates no locks


def _converged_run(results: Path, name: str, test: list[float], final_train_err: float) -> None:
    run = results / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": "m", "method": "sgd"}))
    (run / "eval.json").write_text(json.dumps({"epoch": "300", "stages": [{"top1_err": e} for e in test]}))
    before = len(test) - 1  # stages before the last: fixed training numbers
    records = [
        {
            "epoch": e,
            "lr": 0.01,
            "train_loss": [0.1] * before + [0.05],
            "train_top1_err": [9.0] * before + [final_train_err],
        }
        for e in range(1, 21)
    ]
    records[-1]["val_top1_err"] = [v + 1 for v in test]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records))


def test_converged_summary_pools_seeds_judges_convergence_and_tests_the_difference(tmp_path: Path) -> None:
    for seed, (osgd_err, sgd_err) in enumerate([(48.0, 50.0), (49.0, 51.0), (50.0, 52.0)]):
        _converged_run(tmp_path, f"w_osgd_lr0.05_s{seed}", [60.0, 55.0, osgd_err], final_train_err=0.5)
        _converged_run(tmp_path, f"w_sgd_lr0.05_s{seed}", [61.0, 55.0 + seed, sgd_err], final_train_err=5.0)
    table = converged.converged_summary(tmp_path)
    # osgd: last stage 49 +/- 1, converged (training error 0.5% < 2%, flat loss); sgd: 5% is not
    assert (
        "| w | osgd_lr0.05 | 0,1,2 | 61.00 ± 0.00 / 56.00 ± 0.00 / 50.00 ± 1.00 "
        "| 60.00 ± 0.00 / 55.00 ± 0.00 / 49.00 ± 1.00 | 3/3 |" in table
    )
    assert "| w | sgd_lr0.05 | 0,1,2 |" in table
    assert table.count("| 0/3 |") == 1
    # last stage: -2.00, SE = sqrt(1/3 + 1/3), t = -2.449, df = 4, two-sided p = 0.070 (t table)
    row = next(line for line in table.splitlines() if "osgd vs sgd at lr 0.05" in line)
    assert "stage 3: -2.00" in row
    assert "t = -2.45, df = 4.0, p = 0.070" in row
    assert "validated lr" not in table  # the sweep has not finished: no chosen lrs yet


def test_converged_summary_compares_greedy_and_the_priority_orders_with_osgd(tmp_path: Path) -> None:
    for seed in range(2):
        _converged_run(tmp_path, f"w_osgd_lr0.05_s{seed}", [60.0, 50.0, 40.0 + 2 * seed], 0.5)
        _converged_run(tmp_path, f"w_greedy_lr0.05_s{seed}", [55.0 + seed, 50.0, 45.0], 0.5)
        _converged_run(tmp_path, f"w_osgd_p321_lr0.05_s{seed}", [70.0, 50.0, 38.0 + 2 * seed], 0.5)
        _converged_run(tmp_path, f"w_sgd_lr0.05_s{seed}", [65.0, 50.0, 41.0], 0.5)
        _converged_run(tmp_path, f"w_osgd_lr0.025_s{seed}", [62.0, 50.0, 41.0 + seed], 0.5)
    table = converged.converged_summary(tmp_path)
    greedy = next(x for x in table.splitlines() if "greedy_lr0.05 - osgd_lr0.05" in x)
    # stage 1: 55.5 +/- 0.71 against 60 +/- 0: -4.50; stage 3: 45 against 41 +/- 1.41: +4.00
    assert "stage 1: -4.50" in greedy
    assert "stage 3: +4.00" in greedy
    order = next(x for x in table.splitlines() if "priority order 3,2,1" in x)
    assert "osgd_p321_lr0.05 - osgd_lr0.05" in order
    assert "stage 1: +10.00" in order
    assert "stage 3: -2.00" in order
    against_sgd = next(x for x in table.splitlines() if "priority order 3,2,1 (osgd) vs sgd" in x)
    # stage 1: 70 against 65: +5.00; stage 3: 39 +/- 1.41 against 41 +/- 0: -2.00
    assert "osgd_p321_lr0.05 - sgd_lr0.05" in against_sgd
    assert "stage 1: +5.00" in against_sgd
    assert "stage 3: -2.00" in against_sgd
    shorter_step = next(x for x in table.splitlines() if "3,2,1 at lr 0.05 vs 1,2,3 at lr 0.025" in x)
    # stage 1: 70 against 62: +8.00; stage 3: 39 +/- 1.41 against 41.5 +/- 0.71: -2.50
    assert "osgd_p321_lr0.05 - osgd_lr0.025" in shorter_step
    assert "stage 1: +8.00" in shorter_step
    assert "stage 3: -2.50" in shorter_step
    assert "priority order 2,1,3" not in table  # no runs of that order: no row


def test_converged_plan_ends_with_the_width_depth_designs_seed_by_seed() -> None:
    plan = converged.converged_plan()
    names = list(plan)
    width_depth = [n for n in names if runs.design_tag(n) in ("wdsim", "wdalt")]
    assert names[-len(width_depth) :] == width_depth  # registered after every earlier run
    assert width_depth[:4] == [
        "wdsim_osgd_lr0.05_s0",
        "wdsim_sgd_lr0.05_s0",
        "wdalt_osgd_lr0.05_s0",
        "wdalt_sgd_lr0.05_s0",
    ]
    assert len(width_depth) == 12  # 2 designs x 2 methods x 3 seeds
    assert f"--model={runs.WIDTH_DEPTH_ALT}" in plan["wdalt_sgd_lr0.05_s2"]
    assert "--seed=2" in plan["wdalt_sgd_lr0.05_s2"]


def test_run_names_map_to_their_design_and_setting() -> None:
    assert (runs.design_tag("w_osgd_lr0.05_s1"), runs.label("w_osgd_lr0.05_s1")) == ("w", "osgd_lr0.05")
    assert (runs.design_tag("wdalt_sgd_lr0.05_s0"), runs.label("wdalt_sgd_lr0.05_s0")) == ("wdalt", "sgd_lr0.05")
    assert (runs.design_tag("sweep_d_sgd_lr0.1"), runs.label("sweep_d_sgd_lr0.1")) == ("d", "sgd_lr0.1")
    # no design prefix: the name is the setting (underfit Oracles, the controls)
    assert (runs.design_tag("oracle_w0.25_s0"), runs.label("oracle_w0.25_s0")) == (None, "oracle_w0.25")
    assert runs.design_tag("dense_s0") is None


def test_converged_summary_keeps_a_width_depth_design_apart_from_the_width_design(tmp_path: Path) -> None:
    for seed in range(3):
        _converged_run(tmp_path, f"w_osgd_lr0.05_s{seed}", [60.0, 50.0, 40.0 + seed], 0.5)
        _converged_run(tmp_path, f"w_sgd_lr0.05_s{seed}", [60.0, 50.0, 40.0 + seed], 0.5)
        five = [70.0, 60.0, 50.0, 45.0, 40.0 + seed]
        _converged_run(tmp_path, f"wdalt_osgd_lr0.05_s{seed}", five, 0.5)
        _converged_run(tmp_path, f"wdalt_sgd_lr0.05_s{seed}", [e + 3 for e in five], 0.5)
    table = converged.converged_summary(tmp_path)
    assert "| w | osgd_lr0.05 | 0,1,2 |" in table  # the width design's runs alone (three stages)
    assert "| wdalt | osgd_lr0.05 | 0,1,2 |" in table
    rows = [x for x in table.splitlines() if "osgd vs sgd at lr 0.05" in x]
    assert [r.split(" |")[0] for r in rows] == ["| w", "| wdalt"]
    # wdalt: every stage 3.00 lower with osgd (equal sd), five stages; w: no difference
    assert all(f"stage {k}: -3.00" in rows[1] for k in range(1, 6))
    assert "stage 3: +0.00" in rows[0]
    paths = converged.plot_converged(tmp_path)  # a third row of panels, five stages wide
    assert paths[0].stat().st_size > 10_000


def test_converged_oracles_match_each_stages_flops() -> None:
    from timm_anytime.cost import model_costs, stage_costs

    plan = converged.converged_plan()
    for tag, nested in (("w", runs.WIDTH), ("d", runs.DEPTH)):
        stages = [c.flops for c in stage_costs(timm.create_model(nested))]
        for k, flops in enumerate(stages, start=1):
            cfg = config_from_args(reproduce.commands("x", plan[f"{tag}_oracle{k}_lr0.05_s0"], "D", Path("r"))[0][1:])
            oracle = timm.create_model(cfg.model, **cfg.model_kwargs)
            assert model_costs(oracle, (3, 32, 32))[0].flops == pytest.approx(flops, rel=0.05), (tag, k)


def test_converged_summary_compares_every_stage_with_its_oracle(tmp_path: Path) -> None:
    for seed in range(3):
        _converged_run(tmp_path, f"d_osgd_lr0.05_s{seed}", [60.0 + seed, 50.0 + seed, 40.0 + seed], 0.5)
        for k, err in enumerate((58.0, 52.0, 40.0), start=1):
            _converged_run(tmp_path, f"d_oracle{k}_lr0.05_s{seed}", [err + 2 * seed], 0.5)
    row = next(x for x in converged.converged_summary(tmp_path).splitlines() if "FLOP-matched Oracle" in x)
    # stage 1: 61 +/- 1 against 60 +/- 2: +1.00, SE = sqrt(1/3 + 4/3); stage 2: -3.00; stage 3: -1.00
    assert "stage 1: +1.00" in row
    assert "stage 2: -3.00" in row
    assert "stage 3: -1.00" in row
    assert "t = 0.77" in row  # 1 / sqrt(5/3) = 0.7746


def _started(run: Path, *starts: tuple[str, str]) -> None:
    """Write ``environment.jsonl``: one (git_commit, cpu) record per start, as the trainer does."""
    records = [json.dumps({"git_commit": commit, "cpu": cpu}) for commit, cpu in starts]
    (run / "environment.jsonl").write_text("\n".join(records) + "\n")


def test_converged_provenance_names_commits_dirty_and_resumed_runs_and_cpus(tmp_path: Path) -> None:
    clean, later = "a" * 40, "b" * 40
    for name in ("w_sgd_lr0.05_s0", "w_sgd_lr0.05_s1", "w_osgd_lr0.05_s0", "d_sgd_lr0.05_s0"):
        _converged_run(tmp_path, name, [50.0, 45.0, 40.0], 0.5)
    _started(tmp_path / "w_sgd_lr0.05_s0", (clean, "Xeon"))
    _started(tmp_path / "w_sgd_lr0.05_s1", (clean, "Xeon"), (clean, "EPYC"))  # resumed on another machine
    _started(tmp_path / "w_osgd_lr0.05_s0", (later + "-dirty", "EPYC"))
    text = converged.provenance(tmp_path)  # d_sgd_lr0.05_s0 has no environment.jsonl
    assert "Trained at: aaaaaaa (2 runs), bbbbbbb with uncommitted changes (1 runs)." in text
    assert "Uncommitted changes or no commit recorded: w_osgd_lr0.05_s0." in text
    assert "Resumed from an epoch checkpoint: w_sgd_lr0.05_s1 (2 starts)." in text
    assert "CPUs: EPYC (2 runs), Xeon (2 runs)." in text
    assert "No environment.jsonl: d_sgd_lr0.05_s0." in text
    summary = converged.write_summary(tmp_path)
    assert summary.name == "summary.md"
    written = summary.read_text()
    assert text in written
    assert "| w | sgd_lr0.05 | 0,1 |" in written  # the tables follow the provenance


def test_converged_plots_are_written(tmp_path: Path) -> None:
    for seed in range(2):
        _converged_run(tmp_path, f"w_osgd_lr0.05_s{seed}", [60.0 + seed, 50.0, 40.0], 0.5)
        for k in (1, 2, 3):
            _converged_run(tmp_path, f"w_oracle{k}_lr0.05_s{seed}", [50.0 + k + seed], 0.5)
    paths = converged.plot_converged(tmp_path)
    # baselines.png too: empty panels here (these runs have no evaluation outputs to score deadlines)
    assert [p.name for p in paths] == ["comparison.png", "learning_curves.png", "baselines.png"]
    assert all(p.stat().st_size > 10_000 for p in paths)


def test_converged_plot_gives_a_setting_one_colour_in_every_panel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.figure import Figure

    names = ("w_osgd_lr0.05", "w_sgd_lr0.05", "w_osgd_p321_lr0.05", "d_sgd_lr0.05", "d_sgd_sum_lr0.05", "d_odd_lr0.05")
    for seed in range(2):
        for name in names:
            _converged_run(tmp_path, f"{name}_s{seed}", [50.0 + seed, 45.0, 40.0], 0.5)
    figures = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: figures.append(fig))
    converged.plot_converged(tmp_path)
    figure = figures[0]  # comparison.png (then learning_curves.png)
    # a row per design; a column per question that has runs: learning rate, mean or sum, baselines,
    # priority order, and "other settings" for the setting no panel names (odd_lr0.05)
    titles = [ax.get_title().split("\n")[1] for ax in figure.axes]
    assert titles[:5] == [
        "learning rate",
        "mean or sum of the stage losses",
        "greedy and the FLOP-matched Oracles",
        "priority order (and osgd's step halved)",
        "other settings",
    ]
    panels = [{c.get_label().split(" ")[0]: tuple(c.lines[0].get_color()) for c in ax.containers} for ax in figure.axes]
    assert panels[0] == {k: panels[0][k] for k in ("sgd_lr0.05", "osgd_lr0.05")}  # width, learning rate
    assert set(panels[3]) == {"osgd_lr0.05", "osgd_p321_lr0.05"}  # width, priority order
    assert set(panels[6]) == {"sgd_lr0.05", "sgd_sum_lr0.05"}  # depth, mean or sum
    assert set(panels[9]) == {"odd_lr0.05"}  # depth, other settings
    colour: dict[str, tuple] = {}
    for panel in panels:
        assert len(set(panel.values())) == len(panel)  # no two settings of a panel share a colour
        for setting, c in panel.items():
            assert colour.setdefault(setting, c) == c  # a setting keeps its colour everywhere
    # the reference pair's colours are theirs alone
    others = {c for s, c in colour.items() if s not in ("sgd_lr0.05", "osgd_lr0.05")}
    assert not others & {colour["sgd_lr0.05"], colour["osgd_lr0.05"]}


def test_checkpoints_summary_judges_the_target_per_run_and_plots(tmp_path: Path) -> None:
    _converged_run(tmp_path, "w_osgd_s0", [20.0, 15.0, 9.5], final_train_err=1.0)
    _converged_run(tmp_path, "d_osgd_s0", [14.0, 12.0, 10.5], final_train_err=3.0)
    _converged_run(tmp_path, "control_resnet20_sgd_s0", [9.0], final_train_err=0.5)
    _converged_run(tmp_path, "d_osgd_cutout16_s0", [13.0, 11.0, 9.8], final_train_err=4.0)
    _converged_run(tmp_path, "d_osgd_e200_cutout16_s0", [13.0, 11.0, 9.7], final_train_err=2.0)
    _converged_run(tmp_path, "w_sgd_lr0.05_s0", [50.0, 45.0, 40.0], final_train_err=1.0)  # not this protocol's
    summary, convergence = checkpoints.checkpoints_summary(tmp_path).split("\n\n")  # no eval outputs: no paired test
    rows = {line.split(" | ")[0]: line for line in summary.splitlines()}
    assert [r for r in rows if "_s0" in r] == [
        "| d_osgd_s0",
        "| w_osgd_s0",
        "| control_resnet20_sgd_s0 (control, not shipped)",
        "| d_osgd_cutout16_s0 (candidate, not shipped)",
        "| d_osgd_e200_cutout16_s0 (candidate, shipped as osgd_cutout_cifar10_e200)",
    ]
    # every candidate said to ship is a shipped tag of its model
    from timm_anytime.models.pretrained import SHIPPED

    for run, tag in checkpoints.SHIPPED_CANDIDATES.items():
        assert tag in SHIPPED
        assert tag.split(".")[0] == next(f for f in checkpoints.RUNS[run][0] if f.startswith("--model=")).split("=")[1]
    assert "| 13.00 / 11.00 / 9.80 | yes |" in rows["| d_osgd_cutout16_s0 (candidate, not shipped)"]
    assert (
        "| 9.00 | yes | 0.50 | ResNet-20, He et al. 2016 (164 epochs): 8.75 |"
        in rows["| control_resnet20_sgd_s0 (control, not shipped)"]
    )
    assert (
        "| the paper's depth-nested Sparse ResNet-98 d1248 (OSGD, 200 epochs): 10.0 / 8.4 / 7.4 / 6.6 |"
        in rows["| d_osgd_s0"]
    )
    assert (
        "| 20.00 / 15.00 / 9.50 | yes | 9.00 / 9.00 / 1.00 | "
        "the paper's width-nested ResNet-42 w124 (OSGD, 200 epochs): 12.3 / 8.9 / 7.3 |" in rows["| w_osgd_s0"]
    )
    assert "| 14.00 / 12.00 / 10.50 | **no** | 9.00 / 9.00 / 3.00 |" in rows["| d_osgd_s0"]
    assert "| w_osgd_s0 | 20 | 0.01 | 9.00 / 9.00 / 1.00 |" in convergence  # the rule, per run
    assert checkpoints.plot_checkpoints(tmp_path).stat().st_size > 10_000


def test_checkpoints_summary_pairs_each_control_with_the_runs_of_its_recipe_on_the_test_images(
    tmp_path: Path,
) -> None:
    """Counted by hand: the control gets images 0-5 right, w 0-1 and 6-8, d all of 0-9, the d
    candidate 0-2 and 10-11 (against d: 2 vs 7), the e200 candidate 0-8 (against d: 0 vs 1), and
    the Mixup candidate, which builds on the e200 one and is paired with it, 0-8 and 10-11 (2 vs 0).
    The e200 control gets all 12 right and is paired with the two e200 runs only (the width-nested
    one gets 0-2: against its base w, 1 vs 3)."""
    from safetensors.torch import save_file

    right = {
        "control_resnet20_sgd_s0": range(6),
        "control_resnet20_sgd_e200_cutout16_s0": range(12),
        "w_osgd_s0": [0, 1, 6, 7, 8],
        "w_osgd_e200_cutout16_s0": [0, 1, 2],
        "d_osgd_s0": range(10),
        "d_osgd_cutout16_s0": [0, 1, 2, 10, 11],
        "d_osgd_e200_cutout16_s0": range(9),
        "d_osgd_e200_cutout16_mixup1_s0": [*range(9), 10, 11],
    }
    for name, correct in right.items():
        _converged_run(
            tmp_path, name, [10.0] if name.startswith("control") else [20.0, 15.0, 10.0], final_train_err=1.0
        )
        last = torch.zeros(12, dtype=torch.uint8)
        last[list(correct)] = 1
        stages = 1 if name.startswith("control") else 3
        save_file(
            {"correct": torch.stack([torch.zeros(12, dtype=torch.uint8)] * (stages - 1) + [last])},
            str(tmp_path / name / "eval_outputs.safetensors"),
        )
    paired = checkpoints.checkpoints_summary(tmp_path).split("\n\n")[2].splitlines()
    assert paired[1] == (
        "- control_resnet20_sgd_e200_cutout16_s0 against d_osgd_e200_cutout16_s0, last stages: 3 vs 0 of 12 "
        "inputs right in one only (exact McNemar p = 0.25)"  # 2 * (1/2)^3
    )
    assert paired[2] == (
        "- control_resnet20_sgd_e200_cutout16_s0 against w_osgd_e200_cutout16_s0, last stages: 9 vs 0 of 12 "
        "inputs right in one only (exact McNemar p = 0.0039)"  # 2 * (1/2)^9
    )
    assert paired[3] == (
        "- control_resnet20_sgd_s0 against d_osgd_s0, last stages: 0 vs 4 of 12 inputs right in one only "
        "(exact McNemar p = 0.12)"  # 2 * (1/2)^4
    )
    assert paired[4] == (
        "- control_resnet20_sgd_s0 against w_osgd_s0, last stages: 4 vs 3 of 12 inputs right in one only "
        "(exact McNemar p = 1)"
    )
    assert paired[5] == (
        "- d_osgd_cutout16_s0 against d_osgd_s0, last stages: 2 vs 7 of 12 inputs right in one only "
        "(exact McNemar p = 0.18)"  # 2 * (1 + 9 + 36) / 2^9
    )
    assert paired[6] == (
        "- d_osgd_e200_cutout16_mixup1_s0 against d_osgd_e200_cutout16_s0, last stages: 2 vs 0 of 12 inputs right "
        "in one only (exact McNemar p = 0.5)"  # 2 * (1/2)^2
    )
    assert paired[7] == (
        "- d_osgd_e200_cutout16_s0 against d_osgd_s0, last stages: 0 vs 1 of 12 inputs right in one only "
        "(exact McNemar p = 1)"
    )
    assert paired[8] == (
        "- w_osgd_e200_cutout16_s0 against w_osgd_s0, last stages: 1 vs 3 of 12 inputs right in one only "
        "(exact McNemar p = 0.62)"  # 2 * (1 + 3) / 2^4 = 0.625
    )
    assert len(paired) == 9


def test_a_missing_results_folder_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["reproduce_cifar_cpu.py", "--converged-summary", str(tmp_path / "nope")])
    with pytest.raises(SystemExit, match=r"no results folder .*nope"):
        reproduce.main()


def test_an_unknown_run_name_names_the_results_folder_the_plan_was_read_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # d_osgd_lr0.1_s2 is a validated-rate seed: it enters the plan only once depth's sweep is in the
    # results folder, so against an empty folder it is unknown, and the message says where it looked.
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["reproduce_cifar_cpu.py", "--protocol", "converged", "--results", str(empty), "--list"]
    monkeypatch.setattr(sys, "argv", [*argv, "--only", "d_osgd_lr0.1_s2"])
    with pytest.raises(SystemExit, match=r"unknown run names \['d_osgd_lr0.1_s2'\].*read from .*empty.*sweep"):
        reproduce.main()
    _val_run(empty, "d_osgd_lr0.1_s0", [40.0, 40.0, 40.0])  # the sweep: osgd's best rate is 0.1
    for lr in ("0.025", "0.05"):
        _val_run(empty, f"d_osgd_lr{lr}_s0", [50.0, 50.0, 50.0])
    reproduce.main()  # now planned: --list prints it and returns


def test_a_snapshot_of_a_run_in_progress_resumes_to_the_uninterrupted_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--snapshot`` copies a run still training into results/.../in_progress/ so that a fresh
    machine can resume it: resumed from the copy, it ends with the weights (and weight average) of
    the same run never interrupted. A metrics line logged after the last checkpoint is cut."""
    from tests.timm_anytime.runs import interrupt_in_epoch, tiny_config, weights
    from timm_anytime.train import train

    settings = dict(epochs=3, model_ema=True, model_ema_decay=0.9, decay_milestones=[2])
    whole = train(tiny_config(tmp_path / "whole", **settings))
    interrupt_in_epoch(tiny_config(tmp_path / "run", **settings), 2, monkeypatch)  # epochs 1-2 saved
    run = tmp_path / "run"
    logged = (run / "metrics.jsonl").read_text().splitlines()
    ahead = {**json.loads(logged[-1]), "epoch": 3}  # as if epoch 3 were logged, its checkpoint not yet saved
    (run / "metrics.jsonl").write_text("\n".join([*logged, json.dumps(ahead)]) + "\n")

    readings = checkpoints.snapshot_run(run, tmp_path / "results" / "in_progress" / "run")
    copy = tmp_path / "results" / "in_progress" / "run"
    assert sorted(p.name for p in copy.iterdir()) == [
        "checkpoint",
        "config.yaml",
        "environment.jsonl",
        "learning_curves.png",
        "metrics.jsonl",
        "progress.md",
    ]
    assert [json.loads(line)["epoch"] for line in (copy / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    progress = (copy / "progress.md").read_text()
    assert progress.startswith("# run: epoch 2 of 3\n")  # the checkpoint's epoch, not the line logged after it
    start = json.loads((run / "environment.jsonl").read_text().splitlines()[0])
    assert f"1. {start['time_utc']}: commit " in progress
    assert "\n2. " not in progress  # one start so far
    second = json.loads(logged[1])
    assert readings.startswith("run: epoch 2\n")
    assert f"| {' / '.join(f'{e:.2f}' for e in second['eval_top1_err'])} |" in readings
    assert f"| {' / '.join(f'{e:.2f}' for e in second['ema_eval_top1_err'])} |" in readings
    assert readings.split("\n\n", 1)[1] in progress  # the same readings table
    assert "The last row" not in progress  # no base given

    # Through the command line, a candidate's snapshot also reads the finished run it builds on.
    candidate, base = "d_osgd_e200_cutout16_mixup1_s0", checkpoints.CANDIDATE_OF["d_osgd_e200_cutout16_mixup1_s0"]
    results = tmp_path / "committed"
    (results / base).mkdir(parents=True)
    base_lines = [{**json.loads(line), "eval_top1_err": [11.0 + i]} for i, line in enumerate(logged)]
    (results / base / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in base_lines[:1]))
    shutil.copytree(run, tmp_path / candidate)
    argv = ["reproduce_cifar_cpu.py", "--snapshot", str(tmp_path / candidate), "--results", str(results)]
    monkeypatch.setattr(sys, "argv", argv)
    reproduce.main()
    noted = (results / "in_progress" / candidate / "progress.md").read_text()
    assert f"| `{base}` | 11.00 | - |" in noted  # its epoch-1 reading; none at epoch 2
    assert f"The last row is `{base}`" in noted

    # A control's snapshot reads the finished runs of its recipe, each in its own row, in that order.
    control = "control_resnet20_sgd_e200_cutout16_s0"
    width, depth = "w_osgd_e200_cutout16_s0", "d_osgd_e200_cutout16_s0"
    for i, finished in enumerate((width, depth)):
        (results / finished).mkdir(parents=True, exist_ok=True)
        (results / finished / "metrics.jsonl").write_text(
            "".join(json.dumps({**r, "eval_top1_err": [21.0 + i, 20.0 + i]}) + "\n" for r in base_lines)
        )
    shutil.copytree(run, tmp_path / control)
    monkeypatch.setattr(
        sys, "argv", ["reproduce_cifar_cpu.py", "--snapshot", str(tmp_path / control), "--results", str(results)]
    )
    reproduce.main()
    noted = (results / "in_progress" / control / "progress.md").read_text().splitlines()
    rows = [line for line in noted if line.startswith("| `")]
    # CONTROL_PAIRED_WITH's order: depth (written second: 22 / 21) before width (21 / 20)
    assert rows == [f"| `{depth}` | 22.00 / 21.00 | 22.00 / 21.00 |", f"| `{width}` | 21.00 / 20.00 | 21.00 / 20.00 |"]
    assert any(
        line.startswith(f"The last rows are `{depth}`, `{width}`, the finished runs trained with") for line in noted
    )

    resumed = train(tiny_config(copy, resume=True, **settings))
    for file in ("model.safetensors", "model_ema.safetensors"):
        expected, got = weights(whole, file), weights(resumed, file)
        assert all(torch.equal(expected[name], got[name]) for name in expected), file
    # Its starts, as a later snapshot lists them: the resume names the epoch it continued from.
    checkpoints.snapshot_run(resumed, tmp_path / "later" / "run")
    starts = [
        line
        for line in (tmp_path / "later" / "run" / "progress.md").read_text().splitlines()
        if line[:3] in ("1. ", "2. ")
    ]
    assert len(starts) == 2
    assert starts[0].endswith(" threads")
    assert starts[1].endswith(" threads, resumed after epoch 2")


def test_a_snapshot_refuses_a_folder_without_a_checkpoint_or_with_mixed_epochs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file, save_file

    from tests.timm_anytime.runs import interrupt_in_epoch, tiny_config

    with pytest.raises(SystemExit, match="not a run folder with a checkpoint"):
        checkpoints.snapshot_run(tmp_path, tmp_path / "out")
    run = tmp_path / "run"
    interrupt_in_epoch(tiny_config(run, epochs=3, model_ema=True), 2, monkeypatch)
    ema = run / "checkpoint" / "model_ema.safetensors"
    save_file(load_file(str(ema)), str(ema), metadata={"format": "pt", "epoch": "1"})  # an older average
    with pytest.raises(SystemExit, match="changed during each of 2 copies"):
        checkpoints.snapshot_run(run, tmp_path / "out" / "run", attempts=2)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing half-written


def test_the_readings_table_says_when_there_are_no_readings_yet() -> None:
    from timm_anytime.learning_curves import LearningCurve

    curve = LearningCurve(epochs=[1, 2], lr=[0.1, 0.1], train_loss=[[1.0], [0.9]], train_err=[[50.0], [40.0]])
    assert checkpoints.readings_table(curve).startswith("no test readings yet (epochs 1-2 trained")
    curve.eval_err[2] = [12.345]
    assert checkpoints.readings_table(curve).splitlines()[-1] == "| test err % per stage | 12.35 |"
    base = LearningCurve(epochs=[1, 2], lr=[0.1, 0.1], train_loss=[[1.0], [0.9]], train_err=[[50.0], [40.0]])
    assert checkpoints.readings_table(curve, [("base_s0", base)]).splitlines()[-1] == "| `base_s0` | - |"
    base.eval_err[2] = [9.876]
    assert checkpoints.readings_table(curve, [("base_s0", base)]).splitlines()[-1] == "| `base_s0` | 9.88 |"
