"""The converged protocol (issue 15): the first 100 training images of each class (1,000), 300
epochs at batch 64 (4,800 steps, lr x0.2 at 30/60/80%), which drives the last stage's training
error under 2%; images 101-200 of each class validate (each method's lr is chosen there), and every
run is also evaluated on the full test split.

The plan, in order: sgd and osgd at lr 0.05, 0.1 and 0.025 (seed 0), seeds 1 and 2 at the chosen
lrs, the rest of the 2x2 ablation at lr 0.05 (sgd on the summed losses, osgd on the mean), the
width-nested design first, then the depth-nested one; then, at lr 0.05 with 3 seeds, Oracles
matched to each stage's FLOPs, greedy with the whole schedule for every stage, osgd's priority
orders, and the anytime baselines (even-width, EANN; ``baselines``); last, the width-depth designs
(``wdsim``, ``wdalt``: osgd and sgd at lr 0.05, 3 seeds). ``converged_summary``,
``provenance`` and ``plot_converged`` report it; ``write_summary`` keeps the report beside the
runs as ``summary.md``.
"""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

from timm_anytime.report import errorbar_mean_std, mean_std
from timm_anytime.train.environment import describe_commit, is_clean_commit, run_starts

from .baselines import BASELINES, deadline_summary, flops_summary, is_baseline, plot_baselines, welch_cell
from .runs import (
    DEPTH,
    DESIGNS,
    WIDTH,
    WIDTH_DEPTH_ALT,
    WIDTH_DEPTH_SIM,
    design_tag,
    final_errors,
    finished_runs,
    label,
    last_validation_errors,
)

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
    greedy with the full schedule per stage, the priority orders and the anytime baselines, all at
    ``ABLATION_LR``."""
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
    # The anytime baselines of claims (c) and (e): osgd first (the paper trains every anytime
    # network with it for Fig. 9), then sgd; the design's tag keeps them beside its nested runs.
    for method in ("osgd", "sgd"):
        for seed in seeds:
            for tag, (prefix, model) in BASELINES.items():
                runs[f"{tag}_{prefix}_{method}_lr{ABLATION_LR}_s{seed}"] = [
                    f"--model={model}",
                    f"--method={method}",
                    f"--lr={ABLATION_LR}",
                    f"--seed={seed}",
                ]
    # The paper's width-depth designs (Table 1, bottom), registered on 2026-12-07 before any of them
    # ran: osgd and sgd at ABLATION_LR, 3 seeds (seed 0 of both designs first). No lr sweep: at
    # 20-45 minutes a run (2 threads) the six sweep runs would cost more than the comparison.
    for seed in seeds:
        for tag, model in (("wdsim", WIDTH_DEPTH_SIM), ("wdalt", WIDTH_DEPTH_ALT)):
            for method in ("osgd", "sgd"):
                runs[f"{tag}_{method}_lr{ABLATION_LR}_s{seed}"] = [
                    f"--model={model}",
                    f"--method={method}",
                    f"--lr={ABLATION_LR}",
                    f"--seed={seed}",
                ]
    return runs


def chosen_lr(results: Path, tag: str, method: str) -> str | None:
    """The lr of ``CONVERGED_LRS`` with the lowest mean validation error over the stages (last
    evaluation, seed 0), or None while any of them has not finished."""
    means = {}
    for lr in CONVERGED_LRS:
        run = results / f"{tag}_{method}_lr{lr}_s0"
        if not (run / "eval.json").is_file():
            return None
        means[lr] = statistics.mean(last_validation_errors(run))
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
    ("greedy (each stage its own schedule) vs osgd", "greedy_lr0.05", "osgd_lr0.05"),
    ("greedy (each stage its own schedule) vs sgd", "greedy_lr0.05", "sgd_lr0.05"),
    ("priority order 3,2,1 vs 1,2,3 (osgd)", "osgd_p321_lr0.05", "osgd_lr0.05"),
    ("priority order 2,1,3 vs 1,2,3 (osgd)", "osgd_p213_lr0.05", "osgd_lr0.05"),
    ("priority order 3,2,1 (osgd) vs sgd at lr 0.05", "osgd_p321_lr0.05", "sgd_lr0.05"),
    ("priority order 2,1,3 (osgd) vs sgd at lr 0.05", "osgd_p213_lr0.05", "sgd_lr0.05"),
    # is 3,2,1's gain a shorter step? the default order with every step halved
    ("priority order 3,2,1 at lr 0.05 vs 1,2,3 at lr 0.025 (osgd)", "osgd_p321_lr0.05", "osgd_lr0.025"),
)


def collect_runs(results: Path) -> dict[tuple[str, str], dict[str, list]]:
    """The finished runs in ``results``, grouped by (design, setting) over seeds: per run its test
    and validation errors per stage, whether it met the convergence rule, and its seed."""
    from timm_anytime.learning_curves import convergence, read_learning_curve

    groups: dict[tuple[str, str], dict[str, list]] = {}
    for run in finished_runs(results):
        group = groups.setdefault(
            (design_tag(run.name), label(run.name)), {"test": [], "val": [], "converged": [], "seeds": []}
        )
        group["test"].append(final_errors(run)[1])
        group["val"].append(last_validation_errors(run))
        group["converged"].append(convergence(read_learning_curve(run)).converged)
        group["seeds"].append(run.name.rsplit("_s", 1)[1])
    return groups


def converged_summary(results: Path) -> str:
    """Markdown: per design and setting, validation and test errors (mean +/- sd over seeds) and how
    many runs met the convergence rule; then Welch tests of ``CONVERGED_COMPARISONS`` per stage;
    then the convergence rule and how soon the last stage fitted, per run."""
    groups = collect_runs(results)

    def cells(rows: list[list[float]]) -> str:
        return " / ".join(mean_std(s) for s in zip(*rows, strict=True))

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
    for tag in DESIGNS:
        chosen = {m: chosen_lr(results, tag, m) for m in ("sgd", "osgd")}
        for what, a, b in CONVERGED_COMPARISONS:
            if "{" in a and None in chosen.values():
                continue
            a, b = a.format(**chosen), b.format(**chosen)
            ga, gb = groups.get((tag, a)), groups.get((tag, b))
            if not ga or not gb or len(ga["test"]) < 2 or len(gb["test"]) < 2:
                continue
            stages = zip(zip(*ga["test"], strict=True), zip(*gb["test"], strict=True), strict=True)
            tests = [welch_cell(x, y) for x, y in stages]
            cell = "<br>".join(f"stage {i + 1}: {t}" for i, t in enumerate(tests))
            lines.append(f"| {tag} | {what}: {a} - {b} | {cell} |")
        # each nested stage against the Oracle of its FLOPs (an independent network per stage)
        oracles = [groups.get((tag, f"oracle{k}_lr{ABLATION_LR}")) for k in (1, 2, 3)]
        for variant in (f"osgd_lr{ABLATION_LR}", f"sgd_lr{ABLATION_LR}", f"greedy_lr{ABLATION_LR}"):
            nested = groups.get((tag, variant))
            if not nested or len(nested["test"]) < 2 or any(not o or len(o["test"]) < 2 for o in oracles):
                continue
            by_stage = list(zip(*nested["test"], strict=True))
            tests = [welch_cell(by_stage[k], [r[0] for r in o["test"]]) for k, o in enumerate(oracles)]
            cell = "<br>".join(f"stage {k + 1}: {t}" for k, t in enumerate(tests))
            lines.append(f"| {tag} | nested vs FLOP-matched Oracle: {variant} - oracle_k | {cell} |")
    from timm_anytime.learning_curves import convergence_table, read_learning_curve

    lines += ["", convergence_table({run.name: read_learning_curve(run) for run in finished_runs(results)})]
    return "\n".join(lines)


def provenance(results: Path) -> str:
    """Markdown: where the finished runs in ``results`` were trained, from their ``environment.jsonl``
    (one record per start): the commits and how many runs each trained (a run with uncommitted
    changes is named), the runs resumed across starts, and the CPUs."""
    commits: Counter[str] = Counter()
    cpus: Counter[str] = Counter()
    dirty, resumed, unrecorded = [], [], []
    for run in finished_runs(results):
        starts = run_starts(run)
        if not starts:
            unrecorded.append(run.name)
            continue
        for commit in dict.fromkeys(start.get("git_commit") for start in starts):
            commits[describe_commit(commit)] += 1
            if not is_clean_commit(commit):
                dirty.append(run.name)
        cpus.update({str(start.get("cpu")) for start in starts})  # each CPU once per run
        if len(starts) > 1:
            resumed.append(f"{run.name} ({len(starts)} starts)")
    lines = [
        "Trained at: " + (", ".join(f"{c} ({n} runs)" for c, n in sorted(commits.items())) or "no recorded runs") + ".",
        f"Uncommitted changes or no commit recorded: {', '.join(sorted(set(dirty))) or 'none'}.",
        f"Resumed from an epoch checkpoint: {', '.join(resumed) or 'none'}.",
        "CPUs: " + (", ".join(f"{c} ({n} runs)" for c, n in sorted(cpus.items())) or "none recorded") + ".",
    ]
    if unrecorded:
        lines.append(f"No environment.jsonl: {', '.join(unrecorded)}.")
    return "\n".join(lines)


#: How ``summary.md`` says where it came from.
SUMMARY_HEADER = """# Converged protocol: summary

Written by `python examples/reproduce_cifar_cpu.py --converged-summary {results}` from the run
folders here (do not edit by hand). Test error on the full 10,000-image test split, validation
error on the 1,000 held-out training images, per stage, mean ± sd over seeds; Welch tests per
stage (`timm_anytime.significance`); then the convergence rule per run
(`timm_anytime.learning_curves`).
"""


def write_summary(results: Path) -> Path:
    """Write ``summary.md`` into ``results``: provenance, ``converged_summary``'s tables, then
    ``baselines_summary`` (error against FLOPs and under FLOPs deadlines)."""
    path = results / "summary.md"
    text = SUMMARY_HEADER.format(results=results.as_posix())
    path.write_text(
        f"{text}\n{provenance(results)}\n\n{converged_summary(results)}\n\n{BASELINES_HEADER}\n{baselines_summary(results)}\n"
    )
    return path


#: How ``summary.md`` introduces the FLOPs views of claims (c) and (e).
BASELINES_HEADER = """## Against FLOPs and under FLOPs deadlines (claims (c) and (e))

Each stage at its cumulative cost, beside the anytime baseline of its design and the FLOP-matched
Oracles; then the error at the paper's seven deadlines, 0.5x to 1x the whole nested network's
FLOPs (latency taken proportional to FLOPs), each scheme scored per seed (Oracle_All from the
Oracles of that seed; Oracle_Each equals it when every input costs the same FLOPs), mean ± sd over
seeds, Welch tests per deadline (`examples/cifar_cpu/baselines.py`). Plot: `baselines.png`.
"""


def baselines_summary(results: Path) -> str:
    """Markdown: ``flops_summary`` (claim (c)) then ``deadline_summary`` (claim (e)) at ``ABLATION_LR``."""
    return f"{flops_summary(results, ABLATION_LR)}\n\n{deadline_summary(results, ABLATION_LR)}"


#: The label of the FLOP-matched Oracles' series in ``comparison.png``.
ORACLE_SERIES = "oracle (FLOP-matched)"

_REFERENCE = (f"sgd_lr{ABLATION_LR}", f"osgd_lr{ABLATION_LR}")

#: The columns of ``comparison.png``: one question each, so that no panel carries more than a few
#: series. sgd and osgd at ``ABLATION_LR`` recur in every panel as the reference; a setting that no
#: panel names lands in an "other settings" column, so that nothing is dropped silently.
COMPARISON_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("learning rate", tuple(f"{m}_lr{lr}" for m in ("sgd", "osgd") for lr in sorted(CONVERGED_LRS, key=float))),
    ("mean or sum of the stage losses", (*_REFERENCE, f"sgd_sum_lr{ABLATION_LR}", f"osgd_mean_lr{ABLATION_LR}")),
    ("greedy and the FLOP-matched Oracles", (*_REFERENCE, f"greedy_lr{ABLATION_LR}", ORACLE_SERIES)),
    (
        "priority order (and osgd's step halved)",
        (f"osgd_lr{ABLATION_LR}", f"osgd_p213_lr{ABLATION_LR}", f"osgd_p321_lr{ABLATION_LR}", "osgd_lr0.025"),
    ),
)


def comparison_panels(settings: set[str]) -> list[tuple[str, list[str]]]:
    """The columns of ``comparison.png`` for these settings: each of ``COMPARISON_PANELS`` that has
    at least one of them, in the panel's order, then any setting no panel names as "other settings"."""
    panels = [(title, [s for s in names if s in settings]) for title, names in COMPARISON_PANELS]
    named = {s for _, names in COMPARISON_PANELS for s in names}
    panels.append(("other settings", sorted(settings - named)))
    return [(title, names) for title, names in panels if names]


def plot_converged(results: Path) -> list[Path]:
    """``comparison.png`` (test error per stage, mean +/- sd over seeds: a row per design and a
    column per question of ``COMPARISON_PANELS``), ``learning_curves.png`` (seed 0 of every
    setting) and ``baselines.png`` (``baselines.plot_baselines``) in ``results``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from timm_anytime.learning_curves import plot_learning_curves, read_learning_curve
    from timm_anytime.report import panel_styles

    groups = collect_runs(results)
    designs: dict[str, dict[str, list]] = {}
    # a row per design: width and depth always, a width-depth design once it has a finished run
    for tag in [t for t in DESIGNS if t in ("w", "d") or any(g == t for g, _ in groups)]:
        # the baselines' stages sit at other FLOPs than the nested ones: they are in baselines.png
        variants = {
            v: g["test"]
            for (t, v), g in groups.items()
            if t == tag and not v.startswith("oracle") and not is_baseline(v)
        }
        oracles = [groups.get((tag, f"oracle{k}_lr{ABLATION_LR}")) for k in (1, 2, 3)]
        if all(oracles):
            # one row per seed index: the single-stage error of Oracle 1, 2 and 3
            per_stage = [[errors[0] for errors in o["test"]] for o in oracles]
            variants[ORACLE_SERIES] = [list(row) for row in zip(*per_stage, strict=False)]
        designs[tag] = variants
    settings = {v for variants in designs.values() for v in variants}
    columns = comparison_panels(settings) or [("no finished runs yet", [])]
    # a setting keeps its style in every panel; the reference pair's two colours are theirs alone
    styles = panel_styles([[*_REFERENCE, *names] for _, names in columns])
    fig, axes = plt.subplots(
        len(designs), len(columns), figsize=(4.2 * len(columns), 3.8 * len(designs)), squeeze=False, sharey="row"
    )
    for row, tag in zip(axes, designs, strict=True):
        variants = designs[tag]
        num_stages = max((len(errors[0]) for errors in variants.values()), default=3)
        for ax, (question, names) in zip(row, columns, strict=True):
            shown = [s for s in names if s in variants]
            for i, variant in enumerate(shown):
                stages = list(zip(*variants[variant], strict=True))
                x = [k + 1 + 0.05 * (i - (len(shown) - 1) / 2) for k in range(len(stages))]
                label = f"{variant} (n={len(variants[variant])})"
                errorbar_mean_std(ax, x, stages, label=label, **styles[variant])
            ax.set(title=f"{DESIGNS[tag]}\n{question}", xticks=range(1, num_stages + 1))
            ax.title.set_fontsize(9)
            ax.grid(alpha=0.3)
            if shown:
                ax.legend(fontsize=7)
            else:
                ax.text(0.5, 0.5, "no finished runs", transform=ax.transAxes, ha="center", color="grey")
        row[0].set_ylabel("test top-1 error (%), mean ± sd")
    for ax in axes[-1]:
        ax.set_xlabel("stage")
    fig.suptitle("Converged protocol: test error per stage (1,000 training images, 300 epochs)", fontsize=11)
    fig.tight_layout()
    comparison = results / "comparison.png"
    fig.savefig(comparison, dpi=110)
    plt.close(fig)
    seed0 = {run.name: read_learning_curve(run) for run in finished_runs(results) if run.name.endswith("_s0")}
    curves = plot_learning_curves(seed0, results / "learning_curves.png", max_panels=len(seed0) or 1)
    return [comparison, curves, plot_baselines(results, ABLATION_LR, results / "baselines.png")]
