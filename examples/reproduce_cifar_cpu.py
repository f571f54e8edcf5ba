"""The CPU-scale reproduction of the paper's CIFAR-10 experiments (issue 7), as a resumable queue.

Every run of the plan below is ``anytime-train`` then ``anytime-eval`` with the same reduced
protocol: 500 training images per class (5,000), 10 epochs, the paper's schedule shape (lr 0.1,
x0.2 at 30/60/80% of the epochs, momentum 0.9, batch 128), evaluated on the full 10,000-image test
split. Runs go to ``runs/repro/<name>``; each finished run's ``config.yaml``, ``metrics.jsonl``,
``eval.json``, ``eval_outputs.safetensors`` (per-input results, for ``anytime-report``) and the exact
commands are copied to ``results/cifar10_cpu/<name>/`` (no weights), and a run whose results exist
is skipped, so the queue can be stopped and restarted at
any time, across sessions and machines:

    python examples/reproduce_cifar_cpu.py --data-dir ../shared/datasets/cifar10   # run what is missing
    python examples/reproduce_cifar_cpu.py --list                                   # the plan and its state
    python examples/reproduce_cifar_cpu.py --only w_sgd_s0 w_osgd_s0                 # chosen runs
    python examples/reproduce_cifar_cpu.py --summary results/cifar10_cpu results/h200_paper_archs
                                              # markdown: every measured row next to the paper's
    python examples/reproduce_cifar_cpu.py --sweep-summary results/cifar10_cpu
                                              # the learning-rate sweep on the validation split

Two protocols (``--protocol``). ``underfit`` (the default, above) is the 10-epoch one of issue 7,
where every network stops far from fitting its data. ``converged`` (issue 15) trains on the first
100 images of each class (1,000) for 300 epochs at batch 64 (4,800 steps, x0.2 at 30/60/80%), which
drives the last stage's training error under 2%; the next 100 images of each class (101-200)
validate, and every run is also evaluated on the full test split. Its plan: sgd and osgd at lr
0.05, 0.1 and 0.025 (seed 0; each method's lr is chosen on the validation split), seeds 1 and 2 at
the chosen lrs, then the 2x2 ablation at lr 0.05 (sgd on the summed losses, osgd on the mean), the
width-nested design first, then the depth-nested one; then, at lr 0.05 and 3 seeds, Oracles matched
to each stage's FLOPs, greedy with the full schedule for every stage, and osgd's priority orders. Its results go to
``results/cifar10_cpu_converged/``:

    python examples/reproduce_cifar_cpu.py --protocol converged --list
    python examples/reproduce_cifar_cpu.py --converged-summary results/cifar10_cpu_converged
                                              # mean +/- sd over seeds, convergence, Welch tests, plots

Several workers may run one queue at once (one per core, ``OMP_NUM_THREADS=1``): each claims a run
with a lock file that the operating system releases when the worker exits.

The underfit plan is ordered by importance: the key comparison first (sgd vs osgd on the width- and the
depth-nested network), then the reduction ablation, the Oracles, the other methods, the
baselines, the priority orders, and the extra seeds. Last, the learning-rate sweep
(``sweep_*``): sgd and osgd at lr 0.05, 0.1, 0.2 and 0.3, trained on the first 400 images of each
class and validated on the next 100 (never on the test split), so that each method's lr is chosen
fairly.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WIDTH, DEPTH = "anytime_cifar_resnet20_w124", "anytime_cifar_sparse_resnet26_d124"
#: C of normsgd / osgd_norm from ``examples/calibrate_norm_scale.py`` under the protocol (seed 0):
#: the median per-parameter RMS gradient of each design's stages over one epoch of sgd.
CALIBRATED_C = {"w": 0.0058, "d": 0.0015}
PROTOCOL = ["--dataset=cifar10", "--train-per-class=500", "--epochs=10", "--batch-size=128", "--eval-every=5"]


def plan() -> dict[str, list[str]]:
    """Run name -> the ``anytime-train`` flags that differ from the protocol."""
    runs: dict[str, list[str]] = {}
    for seed in (0,):
        for tag, model in (("w", WIDTH), ("d", DEPTH)):
            for method in ("sgd", "osgd"):
                runs[f"{tag}_{method}_s{seed}"] = [f"--model={model}", f"--method={method}", f"--seed={seed}"]
    # The ablation: OSGD's sum of orthogonalized gradients vs the mean (SGD's effective step size).
    for tag, model in (("w", WIDTH), ("d", DEPTH)):
        runs[f"{tag}_osgd_mean_s0"] = [f"--model={model}", "--method=osgd", "--reduction=mean"]
    # The other half of the 2x2: SGD's update on the summed losses (no projection, OSGD's step
    # size), i.e. lr x3 with weight decay /3 for three stages, so that the decay step is unchanged.
    for tag, model in (("w", WIDTH), ("d", DEPTH)):
        runs[f"{tag}_sgd_sum_s0"] = [f"--model={model}", "--method=sgd", "--lr=0.3", f"--weight-decay={5e-4 / 3:.6g}"]
    # The Oracle: an independent plain network of each stage's size (width 1/4, 1/2, 1; 1, 2, 4 units).
    for width in ("0.25", "0.5", "1.0"):
        runs[f"oracle_w{width}"] = ["--model=cifar_resnet20", "--model-kwargs", f"width={width}", "--method=sgd"]
    for units in (1, 2, 4):
        runs[f"oracle_d{units}"] = ["--model=cifar_sparse_resnet26", "--model-kwargs", f"units_per_stage={units}"]
        runs[f"oracle_d{units}"].append("--method=sgd")
    for tag, model in (("w", WIDTH), ("d", DEPTH)):
        for method in ("greedy", "normsgd", "osgd_norm"):
            runs[f"{tag}_{method}_s0"] = [f"--model={model}", f"--method={method}"]
    # The paper's C = 0.5 diverges here; C calibrated by examples/calibrate_norm_scale.py instead.
    for tag, model in (("w", WIDTH), ("d", DEPTH)):
        for method in ("normsgd", "osgd_norm"):
            flags = [f"--model={model}", f"--method={method}", f"--norm-scale={CALIBRATED_C[tag]}"]
            runs[f"{tag}_{method}_cal_s0"] = flags
    for method in ("sgd", "osgd"):
        runs[f"even_{method}_s0"] = ["--model=anytime_cifar_resnet20_e1234", f"--method={method}"]
        runs[f"eann_{method}_s0"] = ["--model=eann_cifar_sparse_resnet50", f"--method={method}"]
    runs["eann_adaloss_s0"] = ["--model=eann_cifar_sparse_resnet50", "--method=adaloss"]
    runs["w_osgd_p321_s0"] = [f"--model={WIDTH}", "--method=osgd", "--priority", "3", "2", "1"]  # default: 1 2 3
    runs["w_osgd_p213_s0"] = [f"--model={WIDTH}", "--method=osgd", "--priority", "2", "1", "3"]
    for seed in (1, 2):
        for tag, model in (("w", WIDTH), ("d", DEPTH)):
            for method in ("sgd", "osgd"):
                runs[f"{tag}_{method}_s{seed}"] = [f"--model={model}", f"--method={method}", f"--seed={seed}"]
    # Seeds of the summed-step SGD: the ablation's finding (step size, not projection) rests on it.
    for seed in (1, 2):
        for tag in ("w", "d"):
            runs[f"{tag}_sgd_sum_s{seed}"] = [*runs[f"{tag}_sgd_sum_s0"], f"--seed={seed}"]
    # Greedy splits --epochs across the stages, so in w/d_greedy_s0 each stage gets 3-4. The paper's
    # greedy trains every stage with the full schedule: here 10 epochs per stage, 30 in all. Each
    # stage runs its own subnetwork, so this costs the sum of the stages' FLOPs: 1.4x (width) and
    # 1.8x (depth) the training FLOPs of sgd, which runs the full network once for all stages.
    for tag, model in (("w", WIDTH), ("d", DEPTH)):
        runs[f"{tag}_greedy_e30_s0"] = [f"--model={model}", "--method=greedy", "--epochs=30"]
    runs.update(sweep_plan())
    return runs


#: The learning rates of the sweep, and its split: the first 400 training images of each class
#: train, the next 100 (images 401-500, inside the protocol's subset) validate; the test split is
#: never read. Each method's lr is the one with the lowest mean validation error over the stages
#: at the last epoch (chosen before the sweep ran).
SWEEP_LRS = ("0.05", "0.1", "0.2", "0.3")
SWEEP_SPLIT = ["--train-per-class=400", "--val-per-class=100"]


def sweep_plan() -> dict[str, list[str]]:
    """``sweep_<design>_<method>_lr<lr>``: sgd and osgd at every lr of ``SWEEP_LRS``, one seed."""
    runs = {}
    for tag, model in (("w", WIDTH), ("d", DEPTH)):
        for method in ("sgd", "osgd"):
            for lr in SWEEP_LRS:
                runs[f"sweep_{tag}_{method}_lr{lr}"] = [f"--model={model}", f"--method={method}", f"--lr={lr}"]
                runs[f"sweep_{tag}_{method}_lr{lr}"] += SWEEP_SPLIT
    return runs


#: The converged protocol: 1,000 training images, 300 epochs at batch 64; images 101-200 of each
#: class validate. Its learning rates run in this order (the pilot's 0.05 first).
CONVERGED = [
    "--dataset=cifar10",
    "--train-per-class=100",
    "--val-per-class=100",
    "--epochs=300",
    "--batch-size=64",
    "--eval-every=50",
]
CONVERGED_LRS = ("0.05", "0.1", "0.025")
#: The base lr of the converged 2x2 ablation (sgd/osgd x mean/sum of the stage losses).
ABLATION_LR = "0.05"


#: Oracles matched to each nested stage's FLOPs (``timm_anytime.cost``): the width-nested stages
#: cost 5.24 / 15.48 / 56.03 MFLOPs; plain ``cifar_resnet20`` at width 1/4, 7/16 and 13/16 (integer
#: channels) costs 5.24 / 15.74 / 53.68. The depth-nested stages cost 31.3 / 61.7 / 120.4; plain
#: ``cifar_sparse_resnet26`` with 1, 2 and 4 units costs 31.3 / 59.6 / 116.2.
FLOP_MATCHED_ORACLES = {
    "w": [("cifar_resnet20", f"width={w}") for w in ("0.25", "0.4375", "0.8125")],
    "d": [("cifar_sparse_resnet26", f"units_per_stage={u}") for u in (1, 2, 4)],
}


def converged_plan(results: Path | None = None) -> dict[str, list[str]]:
    """``<design>_<setting>_lr<lr>_s<seed>`` runs of the converged protocol, in order of importance:
    per design, the lr sweep (seed 0), seeds 1 and 2 at each method's chosen lr (they enter the plan
    once its sweep is in ``results``), the rest of the 2x2 ablation; then the FLOP-matched Oracles,
    greedy with the full schedule per stage, and the priority orders, all at ``ABLATION_LR``."""
    runs: dict[str, list[str]] = {}
    seeds = (0, 1, 2)
    for tag, model in (("w", WIDTH), ("d", DEPTH)):
        for lr in CONVERGED_LRS:
            for method in ("sgd", "osgd"):
                runs[f"{tag}_{method}_lr{lr}_s0"] = [f"--model={model}", f"--method={method}", f"--lr={lr}"]
        for method in ("sgd", "osgd"):
            chosen = chosen_lr(results, tag, method) if results is not None else None
            for lr in dict.fromkeys(x for x in (chosen, ABLATION_LR) if x is not None):
                for seed in seeds[1:]:
                    flags = [f"--model={model}", f"--method={method}", f"--lr={lr}", f"--seed={seed}"]
                    runs[f"{tag}_{method}_lr{lr}_s{seed}"] = flags
        # The rest of the 2x2 at ABLATION_LR: sgd on the summed losses (lr x3, weight decay /3, the
        # same decay step) and osgd on the mean of its orthogonalized gradients.
        summed_lr, summed_wd = f"{3 * float(ABLATION_LR):.6g}", f"{5e-4 / 3:.6g}"
        for seed in seeds:
            runs[f"{tag}_sgd_sum_lr{ABLATION_LR}_s{seed}"] = [
                f"--model={model}",
                "--method=sgd",
                f"--lr={summed_lr}",
                f"--weight-decay={summed_wd}",
                f"--seed={seed}",
            ]
            runs[f"{tag}_osgd_mean_lr{ABLATION_LR}_s{seed}"] = [
                f"--model={model}",
                "--method=osgd",
                "--reduction=mean",
                f"--lr={ABLATION_LR}",
                f"--seed={seed}",
            ]
    for tag, model in (("w", WIDTH), ("d", DEPTH)):
        for seed in seeds:
            for stage, (oracle, kwargs) in enumerate(FLOP_MATCHED_ORACLES[tag], start=1):
                runs[f"{tag}_oracle{stage}_lr{ABLATION_LR}_s{seed}"] = [
                    f"--model={oracle}",
                    "--model-kwargs",
                    kwargs,
                    "--method=sgd",
                    f"--lr={ABLATION_LR}",
                    f"--seed={seed}",
                ]
            # greedy splits --epochs over its stages: 300 epochs (the whole schedule) for each
            runs[f"{tag}_greedy_lr{ABLATION_LR}_s{seed}"] = [
                f"--model={model}",
                "--method=greedy",
                "--epochs=900",
                f"--lr={ABLATION_LR}",
                f"--seed={seed}",
            ]
    for seed in seeds:
        for order in ("321", "213"):  # the default is 1 2 3
            runs[f"w_osgd_p{order}_lr{ABLATION_LR}_s{seed}"] = [
                f"--model={WIDTH}",
                "--method=osgd",
                "--priority",
                *order,
                f"--lr={ABLATION_LR}",
                f"--seed={seed}",
            ]
    return runs


def chosen_lr(results: Path, tag: str, method: str) -> str | None:
    """The lr of ``CONVERGED_LRS`` with the lowest mean validation error over the stages (last
    evaluation, seed 0), or None while any of them has not finished."""
    means = {}
    for lr in CONVERGED_LRS:
        metrics = results / f"{tag}_{method}_lr{lr}_s0" / "metrics.jsonl"
        if not (metrics.parent / "eval.json").is_file():
            return None
        records = [json.loads(x) for x in metrics.read_text().splitlines()]
        val = [r["val_top1_err"] for r in records if "val_top1_err" in r]
        means[lr] = statistics.mean(val[-1])
    return min(means, key=means.get)


#: The converged comparisons: (what it isolates, run variant a, run variant b); ``{sgd}`` and
#: ``{osgd}`` are those methods' lrs chosen on the validation split.
CONVERGED_COMPARISONS = (
    ("osgd vs sgd, each at its validated lr", "osgd_lr{osgd}", "sgd_lr{sgd}"),
    ("osgd vs sgd at lr 0.05", "osgd_lr0.05", "sgd_lr0.05"),
    ("projection, at the summed step (osgd vs sgd on the sum)", "osgd_lr0.05", "sgd_sum_lr0.05"),
    ("projection, at the mean step (osgd on the mean vs sgd)", "osgd_mean_lr0.05", "sgd_lr0.05"),
    ("step size, sgd (sum vs mean)", "sgd_sum_lr0.05", "sgd_lr0.05"),
    ("step size, osgd (sum vs mean)", "osgd_lr0.05", "osgd_mean_lr0.05"),
)


def converged_summary(results: Path) -> str:
    """Markdown: per design and setting, validation and test errors (mean +/- sd over seeds) and how
    many runs met the convergence rule; then Welch tests of ``CONVERGED_COMPARISONS`` per stage."""
    from timm_anytime.learning_curves import convergence, read_learning_curve

    groups: dict[tuple[str, str], dict[str, list]] = {}
    for run in sorted(p for p in results.iterdir() if (p / "eval.json").is_file()):
        tag, variant = run.name[0], re.sub(r"^[wd]_|_s\d+$", "", run.name)
        records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        group = groups.setdefault((tag, variant), {"test": [], "val": [], "converged": [], "seeds": []})
        group["test"].append(_errors(run)[1])
        group["val"].append([r["val_top1_err"] for r in records if "val_top1_err" in r][-1])
        group["converged"].append(convergence(read_learning_curve(run)).converged)
        group["seeds"].append(run.name.rsplit("_s", 1)[1])

    def cells(rows: list[list[float]]) -> str:
        stages = list(zip(*rows, strict=True))
        if len(rows) == 1:
            return " / ".join(f"{s[0]:.2f}" for s in stages)
        return " / ".join(f"{statistics.mean(s):.2f} ± {statistics.stdev(s):.2f}" for s in stages)

    lines = [
        "| design | setting | seeds | validation err % per stage | test err % per stage | converged |",
        "|---|---|---|---|---|---|",
    ]
    for (tag, variant), g in sorted(groups.items()):
        seeds = ",".join(g["seeds"])
        lines.append(
            f"| {tag} | {variant} | {seeds} | {cells(g['val'])} | {cells(g['test'])} | "
            f"{sum(g['converged'])}/{len(g['converged'])} |"
        )
    lines += [
        "",
        "| design | comparison | a - b, test err % per stage: difference (95% CI; Welch; detectable) |",
        "|---|---|---|",
    ]
    for tag in ("w", "d"):
        chosen = {m: chosen_lr(results, tag, m) for m in ("sgd", "osgd")}
        for what, a, b in CONVERGED_COMPARISONS:
            if "{" in a and None in chosen.values():
                continue
            a, b = a.format(**chosen), b.format(**chosen)
            ga, gb = groups.get((tag, a)), groups.get((tag, b))
            if not ga or not gb or len(ga["test"]) < 2 or len(gb["test"]) < 2:
                continue
            stages = zip(zip(*ga["test"], strict=True), zip(*gb["test"], strict=True), strict=True)
            tests = [_welch_cell(x, y) for x, y in stages]
            cell = "<br>".join(f"stage {i + 1}: {t}" for i, t in enumerate(tests))
            lines.append(f"| {tag} | {what}: {a} - {b} | {cell} |")
        # each nested stage against the Oracle of its FLOPs (an independent network per stage)
        oracles = [groups.get((tag, f"oracle{k}_lr{ABLATION_LR}")) for k in (1, 2, 3)]
        for variant in (f"osgd_lr{ABLATION_LR}", f"sgd_lr{ABLATION_LR}", f"greedy_lr{ABLATION_LR}"):
            nested = groups.get((tag, variant))
            if not nested or len(nested["test"]) < 2 or any(not o or len(o["test"]) < 2 for o in oracles):
                continue
            by_stage = list(zip(*nested["test"], strict=True))
            tests = [_welch_cell(by_stage[k], [r[0] for r in o["test"]]) for k, o in enumerate(oracles)]
            cell = "<br>".join(f"stage {k + 1}: {t}" for k, t in enumerate(tests))
            lines.append(f"| {tag} | nested vs FLOP-matched Oracle: {variant} - oracle_k | {cell} |")
    return "\n".join(lines)


def plot_converged(results: Path) -> list[Path]:
    """``comparison.png`` (test error per stage, mean +/- sd over seeds, one line per setting and a
    panel per design) and ``learning_curves.png`` (seed 0 of every setting) in ``results``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from timm_anytime.learning_curves import plot_learning_curves, read_learning_curve

    finished = sorted(p for p in results.iterdir() if (p / "eval.json").is_file())
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), squeeze=False)
    for ax, (tag, title) in zip(axes.flat, (("w", WIDTH), ("d", DEPTH)), strict=True):
        variants: dict[str, list[list[float]]] = {}
        for run in finished:
            if run.name.startswith(f"{tag}_") and "oracle" not in run.name:
                variants.setdefault(re.sub(r"^[wd]_|_s\d+$", "", run.name), []).append(_errors(run)[1])
        oracles = [[_errors(r)[1][0] for r in finished if r.name.startswith(f"{tag}_oracle{k}_")] for k in (1, 2, 3)]
        if all(oracles):
            variants["oracle (FLOP-matched)"] = [list(x) for x in zip(*oracles, strict=False)]
        for i, (variant, rows) in enumerate(sorted(variants.items())):
            stages = list(zip(*rows, strict=True))
            means = [statistics.mean(s) for s in stages]
            sds = [statistics.stdev(s) if len(s) > 1 else 0.0 for s in stages]
            x = [k + 1 + 0.04 * (i - len(variants) / 2) for k in range(len(stages))]
            ax.errorbar(x, means, yerr=sds, marker="o", ms=4, capsize=3, label=f"{variant} (n={len(rows)})")
        ax.set(title=f"{title}: converged protocol", xlabel="stage", ylabel="test top-1 error (%)", xticks=[1, 2, 3])
        ax.grid(alpha=0.3)
        if variants:
            ax.legend(fontsize=7)
    fig.tight_layout()
    comparison = results / "comparison.png"
    fig.savefig(comparison, dpi=110)
    plt.close(fig)
    seed0 = {run.name: read_learning_curve(run) for run in finished if run.name.endswith("_s0")}
    curves = plot_learning_curves(seed0, results / "learning_curves.png", max_panels=len(seed0) or 1)
    return [comparison, curves]


def _welch_cell(a: tuple[float, ...], b: tuple[float, ...]) -> str:
    from timm_anytime.significance import welch_test

    try:
        return str(welch_test(a, b))
    except ValueError:  # every seed of both settings gave the same error
        return f"{statistics.mean(a) - statistics.mean(b):+.2f} (no spread across seeds: untestable)"


#: ``--protocol``: (the fixed anytime-train flags, the plan, where results and run folders go).
PROTOCOLS = {
    "underfit": (PROTOCOL, lambda results: plan(), "cifar10_cpu", "repro"),
    "converged": (CONVERGED, converged_plan, "cifar10_cpu_converged", "repro_converged"),
}


def is_sweep(name: str) -> bool:
    return name.startswith("sweep_")


def sweep_summary(folder: Path) -> str:
    """Markdown: validation error per stage for every swept lr, and each method's chosen lr."""
    rows: dict[tuple[str, str], dict[str, list[float]]] = {}
    for run in sorted(folder.glob("sweep_*")):
        records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        last = [r for r in records if "val_top1_err" in r]
        if not last:
            continue
        _, tag, method, lr = run.name.split("_", 3)
        rows.setdefault((tag, method), {})[lr.removeprefix("lr")] = last[-1]["val_top1_err"]
    lines = ["| design | method | lr | validation top-1 err % per stage | mean | chosen |", "|---|---|---|---|---|---|"]
    for (tag, method), by_lr in rows.items():
        means = {lr: statistics.mean(errors) for lr, errors in by_lr.items()}
        best = min(means, key=means.get)
        for lr in sorted(by_lr, key=float):
            cells = " / ".join(f"{e:.2f}" for e in by_lr[lr])
            lines.append(f"| {tag} | {method} | {lr} | {cells} | {means[lr]:.2f} | {'**yes**' if lr == best else ''} |")
    return "\n".join(lines)


#: The paper's CIFAR-10 top-1 error %, stage by stage (Table 1 and Table 2; means over its runs).
PAPER: dict[tuple[str, str], list[float]] = {
    ("depth-nested Sparse ResNet-98 d1248", "greedy"): [9.6, 9.3, 9.2, 9.1],
    ("depth-nested Sparse ResNet-98 d1248", "sgd"): [9.8, 8.3, 7.7, 7.2],
    ("depth-nested Sparse ResNet-98 d1248", "osgd"): [10.0, 8.4, 7.4, 6.6],
    ("depth-nested Sparse ResNet-98 d1248", "normsgd"): [10.0, 8.6, 8.1, 8.0],
    ("depth-nested Sparse ResNet-98 d1248", "osgd_norm"): [10.7, 8.5, 7.6, 6.9],
    ("width-nested ResNet-42 w124", "greedy"): [10.2, 9.9, 9.2],
    ("width-nested ResNet-42 w124", "sgd"): [12.2, 10.1, 9.8],
    ("width-nested ResNet-42 w124", "osgd"): [12.3, 8.9, 7.3],
    ("width-nested ResNet-42 w124", "normsgd"): [12.3, 10.1, 10.1],
    ("width-nested ResNet-42 w124", "osgd_norm"): [12.7, 9.6, 7.4],
    ("EANN cascade Sparse ResNet-98", "greedy"): [9.3, 9.2, 8.8, 8.5],
    ("EANN cascade Sparse ResNet-98", "sgd"): [11.7, 11.1, 8.5, 6.5],
    ("EANN cascade Sparse ResNet-98", "osgd"): [11.6, 10.9, 8.0, 6.4],
    ("Even-width ResNet-42 e1234", "sgd"): [12.7, 10.2, 10.0, 9.9],
    ("Even-width ResNet-42 e1234", "osgd"): [13.9, 10.7, 8.3, 8.3],
}

#: Our model -> the paper's design it stands in for.
DESIGNS = {
    "anytime_cifar_resnet20_w124": "width-nested ResNet-42 w124",
    "anytime_cifar_resnet42_w124": "width-nested ResNet-42 w124",
    "anytime_cifar_sparse_resnet26_d124": "depth-nested Sparse ResNet-98 d1248",
    "anytime_cifar_sparse_resnet98_d1248": "depth-nested Sparse ResNet-98 d1248",
    "eann_cifar_sparse_resnet50": "EANN cascade Sparse ResNet-98",
    "anytime_cifar_resnet20_e1234": "Even-width ResNet-42 e1234",
}


def _errors(run: Path) -> tuple[dict, list[float], int]:
    """A result folder's config, final per-stage top-1 errors and epoch: from ``eval.json``, or from
    the last evaluation in ``metrics.jsonl`` when that is later (an evaluation cut short)."""
    import yaml

    result = json.loads((run / "eval.json").read_text())
    errors, epoch = [s["top1_err"] for s in result["stages"]], int(result.get("epoch") or 0)
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "eval_top1_err" in record and int(record["epoch"]) > epoch:
            errors, epoch = record["eval_top1_err"], int(record["epoch"])
    return yaml.safe_load((run / "config.yaml").read_text()), errors, epoch


def summary(folders: list[Path]) -> str:
    """Markdown: every measured configuration (seeds pooled: mean and sample std) next to the paper."""
    groups: dict[tuple, list[list[float]]] = {}
    for folder in folders:
        for run in sorted(p for p in folder.iterdir() if (p / "eval.json").is_file()):
            cfg, errors, epoch = _errors(run)
            variant = re.sub(r"_s\d+$", "", run.name)
            key = (folder.name, cfg["model"], str(cfg.get("model_kwargs") or ""), variant, cfg["method"], epoch)
            groups.setdefault(key, []).append(errors)
    lines = [
        "| results | model | run | method | epochs | seeds | top-1 err % per stage (ours) | paper |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (where, model, kwargs, variant, method, epoch), runs in groups.items():
        stages = list(zip(*runs, strict=True))
        if len(runs) > 1:
            cells = [f"{statistics.mean(s):.2f} ± {statistics.stdev(s):.2f}" for s in stages]
        else:
            cells = [f"{s[0]:.2f}" for s in stages]
        paper = PAPER.get((DESIGNS.get(model, ""), method))
        # not an ablation or another priority; a calibrated C (_cal) and greedy's full schedule per
        # stage (_e30) are the paper's own settings
        plain = re.sub(r"_(cal|e\d+)$", "", variant) == f"{variant.split('_')[0]}_{method}"
        paper_cell = " / ".join(f"{e:.1f}" for e in paper) if paper and plain else ""
        name = f"`{model}`" + (f" {kwargs}" if kwargs else "")
        row = [where, name, variant, method, str(epoch), str(len(runs)), " / ".join(cells), paper_cell]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def label(name: str) -> str:
    """The report label of a run: its setting without the seed and the design prefix (``w_osgd_s1``
    -> ``osgd``, ``oracle_w0.25_s0`` -> ``oracle_w0.25``); seeds of one setting share it."""
    return re.sub(r"^(sweep_)?[wd]_", "", re.sub(r"_s\d+$", "", name))


def commands(name: str, flags: list[str], data_dir: str, runs: Path, protocol: list[str] = PROTOCOL) -> list[list[str]]:
    out = runs / name
    train = ["anytime-train", *protocol, f"--data-dir={data_dir}", *flags, f"--name={label(name)}"]
    train += ["--no-progress", f"--output={out}"]
    if is_sweep(name):  # chosen on the validation split: the test split is not evaluated
        return [train]
    return [train, ["anytime-eval", str(out), "--no-progress", "--latency-inputs=100"]]


def _module(command: list[str]) -> list[str]:
    """``anytime-train ...`` as ``python -m timm_anytime.cli.train ...`` (this interpreter)."""
    modules = {"anytime-train": "timm_anytime.cli.train", "anytime-eval": "timm_anytime.cli.evaluate"}
    return [sys.executable, "-m", modules[command[0]], *command[1:]]


def require_clean_tree(allow_dirty: bool, results: Path | None = None) -> None:
    """Refuse to start runs from a git tree with uncommitted changes (their results could not be
    traced to a commit), unless ``allow_dirty``. Changes under ``results`` (the queue's own output,
    written while it runs) do not count."""
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO, capture_output=True, text=True
    )
    if status.returncode != 0:
        if allow_dirty:
            return
        raise SystemExit(f"cannot read the git state of {REPO} ({status.stderr.strip()}); pass --allow-dirty")
    changed = [line[3:] for line in status.stdout.splitlines()]
    if results is not None and results.resolve().is_relative_to(REPO.resolve()):
        own = results.resolve().relative_to(REPO.resolve()).as_posix() + "/"
        changed = [path for path in changed if not path.startswith(own)]
    if changed and not allow_dirty:
        raise SystemExit(
            f"the working tree has uncommitted changes ({', '.join(changed[:5])} ...): results must come from a "
            "committed revision. Commit or stash them (or run from a `git worktree` at a commit), or pass --allow-dirty"
        )


def claim(lock: Path):
    """An exclusive lock on ``lock`` (held until the returned file is closed or the process exits),
    or None when another worker holds it."""
    import fcntl

    lock.parent.mkdir(parents=True, exist_ok=True)
    handle = lock.open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "datasets" / "cifar10"))
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="underfit", help="see the module docstring")
    parser.add_argument("--runs", help="where the run folders go (default: runs/repro[_converged])")
    parser.add_argument("--results", help="where the results go (default: results/cifar10_cpu[_converged])")
    parser.add_argument("--only", nargs="+", help="run just these names")
    parser.add_argument("--list", action="store_true", help="print the plan and which runs are done")
    parser.add_argument("--summary", nargs="+", metavar="RESULTS", help="print the markdown summary and stop")
    parser.add_argument("--sweep-summary", metavar="RESULTS", help="print the learning-rate sweep and stop")
    parser.add_argument(
        "--converged-summary",
        metavar="RESULTS",
        help="print the converged protocol's tables and tests, write its plots into RESULTS, and stop",
    )
    parser.add_argument("--allow-dirty", action="store_true", help="run even with uncommitted changes")
    args = parser.parse_args()
    if args.summary:
        print(summary([Path(f) for f in args.summary]))
        return
    if args.sweep_summary:
        print(sweep_summary(Path(args.sweep_summary)))
        return
    if args.converged_summary:
        print(converged_summary(Path(args.converged_summary)))
        for path in plot_converged(Path(args.converged_summary)):
            print(f"wrote {path}")
        return
    protocol, make_plan, results_name, runs_name = PROTOCOLS[args.protocol]
    runs = Path(args.runs or REPO / "runs" / runs_name)
    results = Path(args.results or REPO / "results" / results_name)
    plan_now = make_plan(results)
    if args.only:
        unknown = sorted(set(args.only) - set(plan_now))
        if unknown:
            raise SystemExit(f"unknown run names {unknown}; see --list")

    def todo() -> dict[str, list[str]]:
        """The plan's runs without results (read again after every run: a finished sweep adds runs)."""
        current = make_plan(results)
        names = args.only or list(current)
        return {
            n: current[n]
            for n in names
            if not (results / n / ("metrics.jsonl" if is_sweep(n) else "eval.json")).is_file()
        }

    if args.list:
        waiting = todo()
        for name, flags in plan_now.items():
            print(f"{'todo' if name in waiting else 'done'}  {name}: {shlex.join(flags)}")
        return
    busy: set[str] = set()  # runs another worker holds
    while True:
        pending = {n: f for n, f in todo().items() if n not in busy}
        if not pending:
            break
        name, flags = next(iter(pending.items()))
        lock = claim(runs / f"{name}.lock")
        if lock is None:
            busy.add(name)
            continue
        with lock:
            if (results / name / "eval.json").is_file() or (
                is_sweep(name) and (results / name / "metrics.jsonl").is_file()
            ):
                continue  # another worker finished it meanwhile
            require_clean_tree(args.allow_dirty, results)
            if not Path(args.data_dir).is_dir():
                raise SystemExit(f"no CIFAR-10 ImageFolder tree at {args.data_dir}: pass --data-dir")
            run_one(name, flags, args.data_dir, runs, results, protocol, runs_name)


def run_one(
    name: str, flags: list[str], data_dir: str, runs: Path, results: Path, protocol: list[str], runs_name: str
) -> None:
    """Train (or resume) and evaluate one run, then copy its results (no weights) to ``results``."""
    steps = commands(name, flags, data_dir, runs, protocol)
    if (runs / name / "config.yaml").is_file():  # an interrupted run: continue it
        steps[0] = ["anytime-train", f"--output={runs / name}", "--resume", f"--name={label(name)}", "--no-progress"]
    start = time.time()
    print(f"== {name}: {shlex.join(steps[0])}", flush=True)
    for step in steps:
        subprocess.run(_module(step), check=True, cwd=REPO)
    target = results / name
    target.mkdir(parents=True, exist_ok=True)
    for file in ("config.yaml", "metrics.jsonl", "eval.json", "eval_outputs.safetensors", "environment.jsonl"):
        if file.startswith("eval") and is_sweep(name):
            continue
        shutil.copy2(runs / name / file, target / file)
    full = commands(name, flags, "DATA_DIR", Path("runs") / runs_name, protocol)
    (target / "commands.txt").write_text("\n".join(shlex.join(c) for c in full) + "\n")
    print(f"== {name} done in {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
