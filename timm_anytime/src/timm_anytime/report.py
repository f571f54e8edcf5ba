"""``anytime-report``: the paper's views of evaluated runs, as a markdown table and PNG plots.

Each run folder must hold ``eval.json`` and ``eval_outputs.safetensors`` (``anytime-eval``); with
its ``metrics.jsonl`` the report adds the learning curves and a convergence table
(``learning_curves``).
Runs with the same label (``--name``, else the method and priority) are seeds of one setting:
tables show their mean and standard deviation. Plain networks (one stage) are the Oracle: an
independently trained network per stage size.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from .deadline import deadline_table
from .learning_curves import convergence_table, plot_learning_curves, read_learning_curve

DEADLINE_FRACTIONS = (0.5, 7 / 12, 2 / 3, 0.75, 5 / 6, 11 / 12, 1.0)  # the paper's 7 deadlines, 0.5x to 1x


@dataclass
class RunResult:
    folder: Path
    info: dict[str, Any]
    correct: Tensor  # bool [stages, inputs]
    finish: Tensor  # float64 seconds [stages, latency inputs]

    @property
    def label(self) -> str:
        return str(self.info["label"])

    @property
    def num_stages(self) -> int:
        return len(self.info["stages"])

    def errors(self) -> list[float]:
        return [s["top1_err"] for s in self.info["stages"]]

    def flops(self) -> list[int]:
        return [s["flops"] for s in self.info["stages"]]


def load_results(folders: Sequence[str | Path]) -> list[RunResult]:
    results = []
    for folder in map(Path, folders):
        if not (folder / "eval.json").is_file() or not (folder / "eval_outputs.safetensors").is_file():
            raise FileNotFoundError(f"{folder} has no evaluation results: run `anytime-eval {folder}` first")
        try:
            info = json.loads((folder / "eval.json").read_text())
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{folder / 'eval.json'} is not valid JSON ({error}): re-run `anytime-eval {folder}`"
            ) from error
        try:
            outputs = load_file(str(folder / "eval_outputs.safetensors"))
        except SafetensorError as error:
            raise ValueError(
                f"{folder / 'eval_outputs.safetensors'} is not a readable safetensors file ({error}): "
                f"re-run `anytime-eval {folder}`"
            ) from error
        results.append(RunResult(folder, info, outputs["correct"].bool(), outputs["finish_s"]))
    if not results:
        raise ValueError("no run folders given")
    evaluated_on = {(r.info["dataset"], r.info["eval_inputs"], r.info["num_classes"]) for r in results}
    if len(evaluated_on) > 1:
        raise ValueError(
            f"the runs were evaluated on different data {sorted(evaluated_on)}: report runs of one dataset together"
        )
    return results


def group(results: Sequence[RunResult]) -> dict[str, list[RunResult]]:
    groups: dict[str, list[RunResult]] = {}
    for result in results:
        groups.setdefault(result.label, []).append(result)
    for label, members in groups.items():
        if len({m.info["model"] for m in members}) > 1:
            raise ValueError(f"runs labelled {label!r} are different models: give them distinct --name labels")
    return groups


def mean_std(values: Sequence[float]) -> str:
    """``"mean ± sd"`` (sample sd, two decimals) of the values of several runs; one run: its value."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def errorbar_mean_std(ax, x: Sequence[float], samples: Sequence[Sequence[float]], **style) -> None:
    """Plot on ``ax``, at each ``x``, the mean of its sample with a bar of one sample sd (no bars
    when every sample is a single run); ``style`` goes to ``ax.errorbar`` (label, marker, ...)."""
    means = [statistics.mean(s) for s in samples]
    spread = any(len(s) > 1 for s in samples)
    sds = [statistics.stdev(s) if len(s) > 1 else 0.0 for s in samples] if spread else None
    ax.errorbar(list(x), means, yerr=sds, ms=4, capsize=3, **style)


def markdown_table(results: Sequence[RunResult]) -> str:
    """Top-1 error (%) per stage for every label (Tables 1-2), mean ± std over its runs."""
    groups = group(results)
    width = max(r.num_stages for r in results)
    header = "| run | model | runs | " + " | ".join(f"stage {k}" for k in range(1, width + 1)) + " |"
    lines = [header, "|" + "---|" * (width + 3)]
    for label, members in groups.items():
        cells = []
        for k in range(width):
            values = [m.errors()[k] for m in members if k < m.num_stages]
            cells.append(mean_std(values) if values else "")
        lines.append(f"| {label} | {members[0].info['model']} | {len(members)} | " + " | ".join(cells) + " |")
    first = results[0]
    flops = " / ".join(f"{f / 1e6:.2f}" for f in first.flops())
    lines.append("")
    lines.append(f"Top-1 error (%) on {first.info['eval_inputs']} {first.info['dataset']} evaluation images. ")
    lines.append(f"{first.info['model']} MFLOPs per stage: {flops}.")
    return "\n".join(lines)


def finish_times(result: RunResult, count: int, cost: str) -> Tensor:
    """When each stage's output is ready for the first ``count`` inputs, ``[stages, count]``: the
    measured seconds (``cost="latency"``) or the stage's cumulative FLOPs (``cost="flops"``)."""
    if cost == "latency":
        return result.finish[:, :count]
    if cost != "flops":
        raise ValueError(f"cost must be 'latency' or 'flops', got {cost!r}")
    flops = torch.tensor([s["anytime_flops"] for s in result.info["stages"]], dtype=torch.float64)
    return flops[:, None].expand(-1, count)


def deadline_view(results: Sequence[RunResult], cost: str = "latency") -> tuple[list[float], dict[str, list[float]]]:
    """Error (%) at the paper's seven deadlines, 0.5x to 1x the mean cost of the largest network.

    Every anytime run uses its most accurate finished stage; a label with several runs (seeds)
    gets their mean error at each deadline. The plain networks (the first run of each label)
    together form Oracle_All and Oracle_Each. ``cost="latency"``: this machine's measured latency
    per input; ``cost="flops"``: latency taken proportional to FLOPs (compute-bound hardware)."""
    groups = group(results)
    # Measured latency exists for the first --latency-inputs inputs; the FLOP model covers them all.
    count = min(r.finish.shape[1] if cost == "latency" else r.correct.shape[1] for r in results)
    anytime = {
        label: [(m.correct[:, :count], finish_times(m, count, cost)) for m in members]
        for label, members in groups.items()
        if members[0].num_stages > 1
    }
    plain = sorted((m[0] for m in groups.values() if m[0].num_stages == 1), key=lambda r: r.flops()[0])
    oracle = None
    if len(plain) > 1:
        oracle = (
            torch.cat([r.correct[:, :count] for r in plain]),
            torch.cat([finish_times(r, count, cost) for r in plain]),
        )
    candidates = [finish_times(plain[-1], count, cost)[0]] if plain else [runs[0][1][-1] for runs in anytime.values()]
    largest = max(candidates, key=torch.mean)
    reference = float(largest.mean())
    deadlines = [reference * f for f in DEADLINE_FRACTIONS]
    num_classes = int(results[0].info["num_classes"])
    table: dict[str, list[float]] = {}
    for label, runs in anytime.items():
        per_run = deadline_table(deadlines, num_classes, anytime={str(i): run for i, run in enumerate(runs)})
        table[label] = [sum(errors) / len(errors) for errors in zip(*per_run.values(), strict=True)]
    table |= deadline_table(deadlines, num_classes, anytime={}, oracle=oracle)
    return deadlines, {name: [100 * e for e in errors] for name, errors in table.items()}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


_MARKERS, _LINESTYLES, _HATCHES = ("o", "^", "s", "D"), ("-", "--", ":", "-."), ("", "//", "..", "xx")


def series_styles(labels: Sequence[str], bars: bool = False) -> dict[str, dict[str, str]]:
    """A distinct matplotlib style per label, as keyword arguments of ``plot``/``errorbar`` (or of
    ``bar`` with ``bars=True``): the 10 ``tab10`` colours, then the same colours with the next
    marker and line style (bars: hatch), so that more than 10 settings stay apart."""
    return {label: _series_style(i, bars) for i, label in enumerate(labels)}


def _series_style(index: int, bars: bool = False) -> dict[str, str]:
    """The ``index``-th style: ``tab10`` colour ``index % 10``, then the next marker and line style
    (bars: hatch) for every further 10."""
    variant = index // 10 % 4
    style = {"hatch": _HATCHES[variant]} if bars else {"marker": _MARKERS[variant], "ls": _LINESTYLES[variant]}
    return {"color": f"C{index % 10}", **style}


def panel_styles(panels: Sequence[Sequence[str]]) -> dict[str, dict[str, str]]:
    """One matplotlib style per label for a figure of several panels: a label keeps its style in
    every panel it appears in, and labels that share a panel never share a colour (up to 10 in a
    panel; past that, the next marker and line style tell them apart). Labels take the lowest colour
    their panels leave free, in order of first appearance."""
    index: dict[str, int] = {}
    for names in panels:
        for label in names:
            if label not in index:
                taken = {index[other] for group in panels if label in group for other in group if other in index}
                index[label] = next(i for i in range(len(index) + 1) if i not in taken)
    return {label: _series_style(i) for label, i in index.items()}


def _save(fig, ax, path: Path) -> Path:
    """The legend outside the axes (it would hide lines of a crowded plot), then write the PNG."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_stage_error(results: Sequence[RunResult], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    groups = {label: members for label, members in group(results).items() if members[0].num_stages > 1}
    styles = series_styles(list(groups))
    for label, members in groups.items():
        stages = list(zip(*(m.errors() for m in members), strict=True))
        errorbar_mean_std(ax, range(1, len(stages) + 1), stages, label=f"{label} (n={len(members)})", **styles[label])
    ax.set(xlabel="stage", ylabel="top-1 error (%)", title="Error per stage (Tables 1-2, Fig. 8)")
    ax.set_xticks(list(range(1, max(r.num_stages for r in results) + 1)))
    ax.grid(alpha=0.3)
    return _save(fig, ax, path)


def plot_error_vs_flops(results: Sequence[RunResult], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    groups = group(results)
    oracle = sorted(
        (m[0].flops()[0], statistics.mean(x.errors()[0] for x in m)) for m in groups.values() if m[0].num_stages == 1
    )
    anytime = {label: members for label, members in groups.items() if members[0].num_stages > 1}
    styles = series_styles(list(anytime))
    for label, members in anytime.items():
        errors = [statistics.mean(m.errors()[k] for m in members) for k in range(members[0].num_stages)]
        ax.plot([f / 1e6 for f in members[0].flops()], errors, label=label, **styles[label])
    if oracle:
        ax.plot(
            [f / 1e6 for f, _ in oracle],
            [e for _, e in oracle],
            marker="s",
            ls="--",
            lw=2,
            color="black",
            label="Oracle (independent networks)",
        )
    ax.set(xlabel="MFLOPs per image", ylabel="top-1 error (%)", title="Error against cost (Fig. 9)")
    ax.grid(alpha=0.3)
    return _save(fig, ax, path)


def plot_deadlines(
    deadlines: Sequence[float], table: dict[str, list[float]], path: Path, cost: str = "latency"
) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(1, len(table))
    styles = series_styles(list(table), bars=True)
    for i, (name, errors) in enumerate(table.items()):
        positions = [d + i * width for d in range(len(deadlines))]
        ax.bar(positions, errors, width, label=name, edgecolor="white", **styles[name])
    ax.set_xticks([d + 0.4 - width / 2 for d in range(len(deadlines))])
    scale, unit = (1000, "ms per input, this machine") if cost == "latency" else (1e-6, "MFLOPs per input")
    ax.set_xticklabels([f"{scale * d:.2f}" for d in deadlines])
    title = "Error under deadlines (Fig. 10)" + (", latency = FLOPs" if cost == "flops" else "")
    ax.set(xlabel=f"deadline ({unit})", ylabel="error (%)", title=title)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, ax, path)


def early_exit_table(results: Sequence[RunResult]) -> str:
    """Markdown: for every run evaluated with ``--early-exit``, error and measured average cost at
    each budget, beside the fixed stage whose cost the budget equals."""
    lines = [
        "| run | budget | test cost | MFLOPs | top-1 err % | fixed stage at this cost |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        info = r.info.get("early_exit")
        if not info:
            continue
        full = r.info["stages"][-1]["anytime_flops"]
        for point in info["points"]:
            fixed = [
                f"stage {k + 1}: {s['top1_err']:.2f}"
                for k, s in enumerate(r.info["stages"])
                if abs(info["stage_costs"][k] - point["budget"]) < 1e-6
            ]
            lines.append(
                f"| {r.label} ({r.folder.name}) | {point['budget']:.3f} | {point['test_cost']:.3f} | "
                f"{point['test_cost'] * full / 1e6:.2f} | {point['test_top1_err']:.2f} | {', '.join(fixed)} |"
            )
    return "\n".join(lines)


def plot_early_exit(results: Sequence[RunResult], path: Path) -> Path:
    """Budgeted classification (MSDNet's Fig. 7 view): early exit's error against average FLOPs,
    the fixed stages of the same network, and the Oracle (independent networks)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    curves = [r for r in results if r.info.get("early_exit")]
    styles = series_styles([f"{r.label} ({r.folder.name})" for r in curves])
    for r in curves:
        name = f"{r.label} ({r.folder.name})"
        full = r.info["stages"][-1]["anytime_flops"]
        points = r.info["early_exit"]["points"]
        ax.plot(
            [p["test_cost"] * full / 1e6 for p in points],
            [p["test_top1_err"] for p in points],
            label=f"{name}: early exit",
            **styles[name],
        )
        stages = r.info["stages"]
        ax.plot(
            [s["anytime_flops"] / 1e6 for s in stages],
            [s["top1_err"] for s in stages],
            ls="none",
            marker="*",
            ms=11,
            color=styles[name]["color"],
            label=f"{name}: fixed stages",
        )
    oracle = sorted((r.flops()[0], r.errors()[0]) for r in results if r.num_stages == 1)
    if oracle:
        ax.plot(
            [f / 1e6 for f, _ in oracle], [e for _, e in oracle], "s--", color="black", label="Oracle (independent)"
        )
    ax.set(xlabel="average MFLOPs per image", ylabel="top-1 error (%)", title="Budgeted classification")
    ax.grid(alpha=0.3)
    return _save(fig, ax, path)


def write_report(folders: Sequence[str | Path], output: str | Path) -> Path:
    """Write ``report.md`` and its plots into ``output``; returns the markdown file."""
    results = load_results(folders)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    sections = ["# Anytime evaluation report", "", markdown_table(results), ""]
    plot_stage_error(results, out / "stage_error.png")
    plot_error_vs_flops(results, out / "error_vs_flops.png")
    sections += ["![error per stage](stage_error.png)", "", "![error against FLOPs](error_vs_flops.png)", ""]
    hardware = results[0].info["hardware"]
    for cost, title, unit, scale in (
        ("latency", f"measured per-input latency on {hardware}, batch size 1", "ms", 1000),
        ("flops", "latency taken proportional to FLOPs (what compute-bound hardware would show)", "MFLOPs", 1e-6),
    ):
        deadlines, table = deadline_view(results, cost)
        name = "deadlines.png" if cost == "latency" else "deadlines_flops.png"
        plot_deadlines(deadlines, table, out / name, cost)
        sections += [
            f"## Deadlines: {title}",
            "",
            "Error (%) at each deadline. A row with several runs (the `runs` column above) is their mean; "
            "Oracle_All and Oracle_Each use the first run of each plain network.",
            "",
            "| scheme | " + " | ".join(f"{scale * d:.3f} {unit}" for d in deadlines) + " |",
            "|---|" + "---|" * len(deadlines),
        ]
        sections += [f"| {n} | " + " | ".join(f"{e:.2f}" for e in errors) + " |" for n, errors in table.items()]
        sections += ["", f"![error under deadlines]({name})", ""]
    if any(r.info.get("early_exit") for r in results):
        plot_early_exit(results, out / "early_exit.png")
        sections += [
            "## Early exit under a compute budget",
            "",
            "Each input exits at the first stage whose confidence passes a threshold calibrated on held-out "
            "training images (`anytime-eval --early-exit`); cost is the average FLOPs on the test split, as a "
            "fraction of running every stage.",
            "",
            early_exit_table(results),
            "",
            "![early exit](early_exit.png)",
            "",
        ]
    curves = {}
    for result in results:
        try:
            curves[result.folder.name] = read_learning_curve(result.folder)
        except (FileNotFoundError, ValueError):  # no training record (e.g. downloaded weights): no curve
            continue
    if curves:
        plot_learning_curves(curves, out / "learning_curves.png")
        sections += [
            "## Training: learning curves and convergence",
            "",
            "Training error is on the augmented batches, averaged over each epoch (greedy: the stage in training).",
            "",
            convergence_table(curves),
            "",
            "![learning curves](learning_curves.png)",
            "",
        ]
    path = out / "report.md"
    path.write_text("\n".join(sections))
    return path
