r"""Where the project's speed and memory targets stand on this machine: one command, one table.

Runs the benchmarks behind each target of the training-speed work (``train_step.py`` and
``anytime_inference.py``), reads the ratio each target is about from their output, and prints one
markdown table: the target, the measured value, the limit, and whether it is met, with the machine
and the git revision (and whether the tree was dirty) it was measured at. Every ratio is measured
side by side within one benchmark run, so the machine's drift cancels within a run but not between
runs: ``--reps N`` repeats each benchmark and judges the mean's 95% confidence interval, so that a
value within noise of its limit reads "at the limit", not "met" or "missed".

    python benchmarks/targets.py                                   # the CPU targets (6 minutes on 2 cores)
    python benchmarks/targets.py --reps 3 --pause timm_anytime.cli.train
    python benchmarks/targets.py --only "train step" --json runs/targets.json
    python benchmarks/targets.py --device cuda                     # the GPU targets (bf16, batch 512)

To tell whether a change moved a ratio, compare revisions with ``compare_revisions.py`` instead.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_revisions import REPO, check_imports, describe, parse_ratios, paused, run_benchmark, tree_state

#: One row of ``train_step.py``'s table: method, stage passes, ms/step, x sgd, img/s[, peak MiB, mem x sgd].
_STEP_ROW = re.compile(
    r"^\s*(?P<method>sgd \(plain\)|\S+)\s+(?P<passes>\S+)\s+(?P<ms>\d+\.\d+)\s+(?P<x_sgd>\d+\.\d+)\s+(?P<img_s>\d+)"
    r"(?:\s+(?P<peak_mib>\S+)\s+(?P<mem_x_sgd>\S+))?\s*$"
)


class MissingValue(LookupError):
    """A benchmark's output did not hold the value a target reads."""


def step_value(method: str, column: str) -> Callable[[str], float]:
    """Reads ``column`` (``x_sgd``, ``img_s``, ``mem_x_sgd``, ...) of ``method``'s row of train_step's table."""

    def read(output: str) -> float:
        for line in output.splitlines():
            match = _STEP_ROW.match(line)
            if match and match.group("method") == method and match.group(column) is not None:
                return float(match.group(column))
        raise MissingValue(f"no {column!r} for {method!r} in train_step.py's table")

    return read


def ratio_value(section: str, name: str) -> Callable[[str], float]:
    """Reads the first ratio (``= 1.23x`` or ``name: 1.23``) whose name starts with ``name``, under
    the heading starting with ``section`` ("" for an unindented line), as
    ``compare_revisions.parse_ratios`` names them."""

    def read(output: str) -> float:
        for (found_section, found_name), value in parse_ratios(output).items():
            if found_section.startswith(section) and found_name.startswith(name):
                return value
        raise MissingValue(f"no ratio {name!r} under {section!r}")

    return read


@dataclass(frozen=True)
class Target:
    label: str
    command: tuple[str, ...]  # the benchmark script and its arguments, run from the repository root
    read: Callable[[str], float]
    limit: float | None  # None: a reading for context (the machine's speed), judged against nothing
    at_least: bool = False  # met when the value is at least ``limit`` (throughput), else at most
    unit: str = "x"
    digits: int = 2  # decimals printed

    def met_by(self, value: float) -> bool:
        if self.limit is None:
            raise ValueError(f"{self.label!r} is a reading for context; it has no limit to meet")
        return value >= self.limit if self.at_least else value <= self.limit


def _train_step(model: str, *extra: str) -> tuple[str, ...]:
    return ("benchmarks/train_step.py", "--model", model, "--batch-size", "128", *extra)


def _inference(model: str, size: int, batches: Sequence[int], rounds: int) -> tuple[str, ...]:
    batch = [str(b) for b in batches]
    return (
        "benchmarks/anytime_inference.py",
        "--model",
        model,
        "--size",
        str(size),
        "--batch",
        *batch,
        "--rounds",
        str(rounds),
    )


def cpu_targets(rounds: int) -> list[Target]:
    """The CPU targets of the training-speed issue (2 cores, batch 128; inference at batch 1 and 64)."""
    r = ("--rounds", str(rounds))
    per_stage = ("--methods", "sgd", "osgd", "normsgd", "osgd_norm", "--memory", *r)
    # VMs of one kind differ by up to 3x in absolute speed: the first row says which this one was. Its
    # command equals the ResNet-20 row's below, and measure() runs each distinct command once.
    targets = [
        Target(
            "train step, ResNet-20 w124: sgd ms/step (this machine's speed)",
            _train_step("anytime_cifar_resnet20_w124", *per_stage),
            step_value("sgd", "ms"),
            None,
            unit=" ms",
            digits=0,
        )
    ]
    for model, short in (
        ("anytime_cifar_resnet20_w124", "ResNet-20 w124"),
        ("anytime_cifar_resnet42_w124", "ResNet-42 w124"),
    ):
        command = _train_step(model, *per_stage)
        targets += [
            Target(f"train step, {short}: osgd / sgd", command, step_value("osgd", "x_sgd"), 1.85),
            Target(f"train step, {short}: normsgd / sgd", command, step_value("normsgd", "x_sgd"), 1.95),
            Target(f"train step, {short}: osgd_norm / sgd", command, step_value("osgd_norm", "x_sgd"), 1.95),
            Target(f"train step, {short}: osgd peak memory / sgd", command, step_value("osgd", "mem_x_sgd"), 1.5),
        ]
    d124 = _train_step("anytime_cifar_sparse_resnet26_d124", "--methods", "sgd", "osgd", "--memory", *r)
    targets += [
        Target("train step, Sparse ResNet-26 d124: osgd / sgd", d124, step_value("osgd", "x_sgd"), 1.65),
        Target("train step, Sparse ResNet-26 d124: osgd peak memory / sgd", d124, step_value("osgd", "mem_x_sgd"), 1.5),
        Target(
            "train step, ResNet-20 w124: sgd channels_last + compile / default",
            _train_step("anytime_cifar_resnet20_w124", "--channels-last", "--compile", "--methods", "sgd", *r),
            ratio_value("", "sgd in this layout / sgd (plain)"),
            0.75,
        ),
    ]
    width = _inference("anytime_cifar_resnet20_w124", 32, (1, 64), rounds)
    for batch in (1, 64):
        section = f"anytime_cifar_resnet20_w124, batch {batch} "
        targets.append(
            Target(
                f"inference, ResNet-20 w124, batch {batch}: all stages / last stage",
                width,
                ratio_value(section, "anytime, all"),
                1.10,
            )
        )
        for stage in (1, 2, 3):
            targets.append(
                Target(
                    f"inference, ResNet-20 w124, batch {batch}: set_active_stage({stage}) / dense",
                    width,
                    ratio_value(section, f"stage {stage}: active"),
                    1.10,
                )
            )
    for model, short in (
        ("anytime_cifar_sparse_resnet50_wd_sim", "Sparse ResNet-50 wd_sim"),
        ("anytime_cifar_sparse_resnet50_wd_alt", "Sparse ResNet-50 wd_alt"),
    ):
        command = _inference(model, 32, (1, 64), rounds)
        for batch in (1, 64):
            targets.append(
                Target(
                    f"inference, {short}, batch {batch}: all stages / last stage",
                    command,
                    ratio_value(f"{model}, batch {batch} ", "anytime, all"),
                    1.25,
                )
            )
    resnet50 = _inference("anytime_resnet50_w124", 224, (1,), max(3, rounds // 2))
    targets.append(
        Target(
            "inference, ResNet-50 w124 224x224, batch 1: all stages / last stage",
            resnet50,
            ratio_value("anytime_resnet50_w124, batch 1 ", "anytime, all"),
            1.10,
        )
    )
    return targets


def cuda_targets(rounds: int) -> list[Target]:
    """The GPU targets: bf16, batch 512, channels_last, ResNet-20 w124."""
    command = (
        "benchmarks/train_step.py",
        "--device",
        "cuda",
        "--precision",
        "bf16",
        "--batch-size",
        "512",
        "--channels-last",
        "--methods",
        "sgd",
        "osgd",
        "--rounds",
        str(rounds),
        "--warmup",
        "10",
    )
    return [
        Target(
            "train step, ResNet-20 w124, bf16 batch 512: sgd img/s",
            command,
            step_value("sgd", "img_s"),
            25_000,
            at_least=True,
            unit=" img/s",
            digits=0,
        ),
        Target(
            "train step, ResNet-20 w124, bf16 batch 512: osgd / sgd throughput",
            command,
            lambda out: 1 / step_value("osgd", "x_sgd")(out),
            0.55,
            at_least=True,
        ),
    ]


def verdict(target: Target, values: Sequence[float]) -> str:
    """The verdict on ``values``: met or missed by one run's value; with two or more runs, met or
    missed only when the mean's whole 95% confidence interval is on one side of the limit, "at the
    limit" otherwise (the difference is within this machine's noise at this n). A reading without a
    limit (the machine's speed) is "context"."""
    if target.limit is None:
        return "context"
    if len(values) < 2:
        return "met" if target.met_by(values[0]) else "missed"
    from timm_anytime.significance import student_t_quantile

    mean = statistics.fmean(values)
    half = student_t_quantile(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    if target.met_by(mean - half) and target.met_by(mean + half):
        return "met"
    if not target.met_by(mean - half) and not target.met_by(mean + half):
        return "missed"
    return "at the limit"


def _format(target: Target, values: Sequence[float]) -> str:
    text = f"{statistics.fmean(values):.{target.digits}f}"
    if len(values) > 1:
        text += f" +/- {statistics.stdev(values):.{target.digits}f}"
    return text + target.unit


def table(targets: Sequence[Target], values: dict[str, list[float]]) -> str:
    rows = ["| target | measured | limit | |", "|---|---|---|---|"]
    for target in targets:
        if target.limit is None:
            limit = "-"
        else:
            limit = (">= " if target.at_least else "<= ") + f"{target.limit:.{target.digits}f}{target.unit}"
        measured = values[target.label]
        rows.append(f"| {target.label} | {_format(target, measured)} | {limit} | {verdict(target, measured)} |")
    return "\n".join(rows)


def machine(device: str) -> str:
    """The device the benchmarks run on, with the versions that matter for their speed."""
    import timm
    import torch

    from timm_anytime.train.environment import cpu_name

    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU {cpu_name()}, {torch.get_num_threads()} threads"
    return f"{name}, torch {torch.__version__}, timm {timm.__version__}"


def measure(targets: Sequence[Target], reps: int, progress: Callable[[str], None] = print) -> dict[str, list[float]]:
    """Runs every distinct benchmark command ``reps`` times and reads each target's value from each run."""
    commands = list(dict.fromkeys(target.command for target in targets))
    values: dict[str, list[float]] = {target.label: [] for target in targets}
    for rep in range(reps):
        for index, command in enumerate(commands, 1):
            progress(f"[{rep + 1}/{reps}, {index}/{len(commands)}] {' '.join(command)}")
            output = run_benchmark(REPO, list(command))
            for target in targets:
                if target.command != command:
                    continue
                try:
                    values[target.label].append(target.read(output))
                except MissingValue as error:
                    raise SystemExit(
                        f"target {target.label!r}: {error}; the benchmark's output changed, update its reader "
                        f"in benchmarks/targets.py. Output:\n{output[-2000:]}"
                    ) from None
    return values


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="which targets (default cpu)")
    parser.add_argument("--reps", type=int, default=1, help="runs of each benchmark (2+ gives a confidence interval)")
    parser.add_argument("--rounds", type=int, default=11, help="timed rounds inside each benchmark run")
    parser.add_argument("--only", nargs="+", metavar="TEXT", help="only the targets whose label contains one of these")
    parser.add_argument("--pause", metavar="PATTERN", help="pause matching processes (pgrep -f) while measuring")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the values and provenance here")
    parser.add_argument("--list", action="store_true", help="print the targets and their commands, run nothing")
    args = parser.parse_args(argv)
    if args.reps < 1 or args.rounds < 1:
        parser.error("--reps and --rounds must be at least 1")
    targets = cpu_targets(args.rounds) if args.device == "cpu" else cuda_targets(args.rounds)
    if args.only:
        targets = [t for t in targets if any(text in t.label for text in args.only)]
        if not targets:
            parser.error(f"no target's label contains any of {args.only}; see --list")
    if args.list:
        for target in targets:
            print(f"{target.label}\n    python {' '.join(target.command)}")
        return
    check_imports(REPO)  # the benchmarks must run this checkout's code, not an installed copy
    with paused(args.pause) as stopped:
        if stopped:
            print(f"paused {len(stopped)} process(es) matching {args.pause!r}")
        where = f"{machine(args.device)}; revision {describe('HEAD', REPO)}"
        commit, dirty = tree_state(REPO)
        print(f"measuring on {where}", flush=True)
        if dirty:
            print("warning: the working tree has uncommitted changes; commit before recording results", flush=True)
        values = measure(targets, args.reps, progress=lambda line: print(line, flush=True))
    runs = f"{args.reps} run{'s' if args.reps > 1 else ''} of each benchmark"
    print(f"\n{where}; {runs}, {args.rounds} rounds each; {datetime.date.today()}\n")
    print(table(targets, values))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "where": where,
            "commit": commit,
            "dirty": dirty,
            "reps": args.reps,
            "rounds": args.rounds,
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "targets": [
                {
                    "label": t.label,
                    "command": ["python", *t.command],
                    "limit": t.limit,
                    "at_least": t.at_least,
                    "values": values[t.label],
                    "verdict": verdict(t, values[t.label]),
                }
                for t in targets
            ],
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
