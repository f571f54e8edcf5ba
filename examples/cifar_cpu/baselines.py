"""The converged protocol's anytime baselines and deadlines: the paper's claims (c) and (e).

Claim (c) (Fig. 9): the nested designs beat the earlier anytime designs on error against FLOPs
and come close to the Oracles. Claim (e) (Fig. 10): under deadlines the nested networks beat
those baselines and Oracle_All. The baselines, one per design: the even-width nested ResNet
(Lee & Shin, 2018) beside the width-nested one, the EANN cascade of Sparse ResNets (Hu et al.,
2019) beside the depth-nested one.

Deadlines here are FLOPs (latency taken proportional to FLOPs, ``timm_anytime.report``): the
paper's seven, 0.5x to 1x the cost of the whole nested network. Every scheme is scored per seed
(its run of that seed; Oracle_All and Oracle_Each from the FLOP-matched Oracles of that seed),
then reported as mean +/- sd over seeds with Welch tests.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

from timm_anytime.deadline import anytime_error, deadline_table
from timm_anytime.report import (
    DEADLINE_FRACTIONS,
    RunResult,
    errorbar_mean_std,
    finish_times,
    load_results,
    mean_std,
)

from .runs import DESIGNS, design_tag, finished_runs, label

#: Per design tag: (run-name prefix, model) of its anytime baseline.
BASELINES: dict[str, tuple[str, str]] = {
    "w": ("even", "anytime_cifar_resnet20_e1234"),
    "d": ("eann", "eann_cifar_sparse_resnet50"),
}


def is_baseline(setting: str) -> bool:
    """A setting (a run label) of a baseline design: its stages are not the nested stages."""
    return setting.split("_", 1)[0] in {prefix for prefix, _ in BASELINES.values()}


def evaluated(results: Path, tag: str) -> dict[str, dict[str, RunResult]]:
    """The finished runs of one design with their evaluation outputs: setting -> seed -> run."""
    runs: dict[str, dict[str, RunResult]] = {}
    for run in finished_runs(results):
        if design_tag(run.name) == tag and (run / "eval_outputs.safetensors").is_file():
            runs.setdefault(label(run.name), {})[run.name.rsplit("_s", 1)[1]] = load_results([run])[0]
    return runs


def oracle_settings(runs: dict[str, dict[str, RunResult]], lr: str) -> list[str]:
    """The FLOP-matched Oracles' settings among ``runs`` at ``lr``, smallest stage first."""
    return sorted(name for name in runs if name.startswith("oracle") and name.endswith(f"_lr{lr}"))


def schemes(lr: str, tag: str) -> tuple[list[str], list[str]]:
    """The settings compared under deadlines: the nested design's and its baseline's (osgd, sgd)."""
    prefix = BASELINES[tag][0]
    return [f"osgd_lr{lr}", f"sgd_lr{lr}"], [f"{prefix}_osgd_lr{lr}", f"{prefix}_sgd_lr{lr}"]


def deadline_errors(
    runs: dict[str, dict[str, RunResult]], tag: str, lr: str
) -> tuple[list[float], dict[str, dict[str, list[float]]]]:
    """The FLOPs deadlines of one design (its ``evaluated`` runs) and, per scheme and seed, the
    error % at each.

    Deadlines: ``DEADLINE_FRACTIONS`` of the nested network's full cost (its last stage's FLOPs).
    Each anytime run answers with its most accurate stage finished by the deadline, a random guess
    when none is (``timm_anytime.deadline``). Oracle_All of a seed comes from the
    ``oracle<k>_lr<lr>`` runs of that seed, when every one of them has finished. (Oracle_Each is
    left out: with FLOPs as the latency every input finishes alike, so it equals Oracle_All.)
    Empty when no nested run of the design has finished."""
    nested, baseline = schemes(lr, tag)
    reference = next((seeds[s] for name in nested if (seeds := runs.get(name)) for s in sorted(seeds)), None)
    if reference is None:
        return [], {}
    full = float(reference.info["stages"][-1]["anytime_flops"])
    deadlines = [full * fraction for fraction in DEADLINE_FRACTIONS]
    table: dict[str, dict[str, list[float]]] = {}
    for name in nested + baseline:
        for seed, run in sorted(runs.get(name, {}).items()):
            finish = finish_times(run, run.correct.shape[1], "flops")
            classes = int(run.info["num_classes"])
            table.setdefault(name, {})[seed] = [100 * anytime_error(run.correct, finish, d, classes) for d in deadlines]
    oracles = [runs[name] for name in oracle_settings(runs, lr)]
    common = set.intersection(*(set(seeds) for seeds in oracles)) if oracles else set()
    for seed in sorted(common):
        members = [seeds[seed] for seeds in oracles]
        correct = torch.cat([m.correct for m in members])
        finish = torch.cat([finish_times(m, m.correct.shape[1], "flops") for m in members])
        classes = int(members[0].info["num_classes"])
        errors = deadline_table(deadlines, classes, anytime={}, oracle=(correct, finish))["Oracle_All"]
        table.setdefault("Oracle_All", {})[seed] = [100 * e for e in errors]
    return deadlines, table


def welch_cell(a: Sequence[float], b: Sequence[float]) -> str:
    """A table cell: ``welch_test(a, b)``, or the bare difference when neither sample varies."""
    from timm_anytime.significance import welch_test

    try:
        return str(welch_test(a, b))
    except ValueError:  # no spread across seeds in either
        return f"{statistics.mean(a) - statistics.mean(b):+.2f} (no spread across seeds: untestable)"


def _spans(deadlines: list[float], a: list[tuple], b: list[tuple]) -> list[tuple[str, tuple, tuple]]:
    """Consecutive deadlines at which both schemes give the same per-seed errors, merged into one
    span (``"28.0-51.4"``), with those errors: a scheme answers with the same stage until the
    next stage is ready, so the same test would otherwise repeat."""
    spans: list[tuple[str, tuple, tuple]] = []
    start = 0
    for i in range(1, len(deadlines) + 1):
        if i == len(deadlines) or (a[i], b[i]) != (a[start], b[start]):
            first, last = deadlines[start] / 1e6, deadlines[i - 1] / 1e6
            span = f"{first:.1f}" if i - 1 == start else f"{first:.1f}-{last:.1f}"
            spans.append((span, a[start], b[start]))
            start = i
    return spans


def flops_summary(results: Path, lr: str) -> str:
    """Markdown, claim (c): per design, the nested network, its baseline and the FLOP-matched
    Oracles at each stage's cost: MFLOPs and test error %, mean +/- sd over seeds."""
    lines = ["| design | setting | seeds | MFLOPs: test err % per stage |", "|---|---|---|---|"]
    for tag in ("w", "d"):
        runs = evaluated(results, tag)
        nested, baseline = schemes(lr, tag)
        oracles = oracle_settings(runs, lr)
        for name in [*nested, *baseline, *oracles]:
            seeds = runs.get(name)
            if not seeds:
                continue
            first = next(iter(seeds.values()))
            cells = []
            for k, stage in enumerate(first.info["stages"]):
                errors = [run.info["stages"][k]["top1_err"] for run in seeds.values()]
                cells.append(f"{stage['anytime_flops'] / 1e6:.1f}: {mean_std(errors)}")
            lines.append(f"| {tag} | {name} | {','.join(seeds)} | {' / '.join(cells)} |")
    return "\n".join(lines)


def deadline_summary(results: Path, lr: str) -> str:
    """Markdown, claim (e): per design, the error % of every scheme at the seven FLOPs deadlines
    (mean +/- sd over seeds), then Welch tests of the nested network against its baseline (the same
    method) and against Oracle_All, per deadline."""
    lines: list[str] = []
    for tag in ("w", "d"):
        deadlines, table = deadline_errors(evaluated(results, tag), tag, lr)
        if not table:
            continue
        header = " | ".join(f"{d / 1e6:.1f}" for d in deadlines)
        lines += [
            f"`{DESIGNS[tag]}` and its baseline, error % at FLOPs deadlines (MFLOPs; 0.5x to 1x the whole "
            "nested network's cost):",
            "",
            f"| scheme | seeds | {header} |",
            "|---|---|" + "---|" * len(deadlines),
        ]
        for scheme, seeds in table.items():
            cells = " | ".join(mean_std(list(errors)) for errors in zip(*seeds.values(), strict=True))
            lines.append(f"| {scheme} | {','.join(seeds)} | {cells} |")
        nested, baseline = schemes(lr, tag)
        pairs = [*zip(nested, baseline, strict=True), *((name, "Oracle_All") for name in (*nested, *baseline))]
        rows = []
        for a, b in pairs:
            if len(table.get(a, {})) < 2 or len(table.get(b, {})) < 2:
                continue
            cells = [
                f"{span}: {welch_cell(x, y)}"
                for span, x, y in _spans(
                    deadlines, list(zip(*table[a].values(), strict=True)), list(zip(*table[b].values(), strict=True))
                )
            ]
            rows.append(f"| {a} - {b} | {'<br>'.join(cells)} |")
        if rows:
            lines += [
                "",
                "| comparison | a - b, error % per deadline (MFLOPs; deadlines where both answer alike are "
                "merged): difference (95% CI; Welch; detectable) |",
                "|---|---|",
            ]
            lines += rows
        lines.append("")
    return "\n".join(lines).rstrip() or "No finished nested runs with evaluation outputs yet."


def plot_baselines(results: Path, lr: str, path: Path) -> Path:
    """``path``: per design (a column), test error against FLOPs per stage (Fig. 9's view) and the
    error at each FLOPs deadline (Fig. 10's, with Oracle_All), mean +/- sd over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from timm_anytime.report import series_styles

    fig, axes = plt.subplots(2, 2, figsize=(11, 8), squeeze=False)
    for column, tag in enumerate(("w", "d")):
        runs = evaluated(results, tag)
        nested, baseline = schemes(lr, tag)
        oracles = oracle_settings(runs, lr)
        names = [n for n in (*nested, *baseline) if n in runs]
        # a scheme keeps its colour in both rows, whichever runs have finished
        styles = series_styles([*nested, *baseline, "oracle (FLOP-matched)", "Oracle_All"])
        top, bottom = axes[0][column], axes[1][column]
        for name in names:
            seeds = list(runs[name].values())
            x = [s["anytime_flops"] / 1e6 for s in seeds[0].info["stages"]]
            stages = list(zip(*(run.errors() for run in seeds), strict=True))
            errorbar_mean_std(top, x, stages, label=f"{name} (n={len(seeds)})", **styles[name])
        if oracles and all(runs[o] for o in oracles):
            x = [next(iter(runs[o].values())).info["stages"][0]["anytime_flops"] / 1e6 for o in oracles]
            stages = [[run.errors()[0] for run in runs[o].values()] for o in oracles]
            errorbar_mean_std(top, x, stages, label="oracle (FLOP-matched)", **styles["oracle (FLOP-matched)"])
        top.set(xlabel="MFLOPs per image (cumulative to the stage)", ylabel="test top-1 error (%), mean ± sd")
        top.set_title(f"{DESIGNS[tag]}: error against FLOPs", fontsize=9)
        deadlines, table = deadline_errors(runs, tag, lr)
        for scheme, seeds in table.items():
            x = [d / 1e6 for d in deadlines]
            errorbar_mean_std(
                bottom, x, list(zip(*seeds.values(), strict=True)), label=f"{scheme} (n={len(seeds)})", **styles[scheme]
            )
        bottom.set(xlabel="deadline (MFLOPs per image)", ylabel="error (%), mean ± sd")
        bottom.set_title(f"{DESIGNS[tag]}: at FLOPs deadlines", fontsize=9)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=7)
            else:
                ax.text(0.5, 0.5, "no finished runs", transform=ax.transAxes, ha="center", color="grey")
    fig.suptitle(
        "Converged protocol (1,000 training images, 300 epochs): nested designs, baselines, Oracles\n"
        "at a deadline each scheme answers with its most accurate stage ready (none ready: a random guess)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
