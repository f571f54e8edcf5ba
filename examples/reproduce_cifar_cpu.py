"""The CPU-scale reproduction of the paper's CIFAR-10 experiments, as a resumable queue.

Every run of a plan is ``anytime-train`` then ``anytime-eval``. Runs go to ``runs/<protocol
folder>/<name>``; each finished run's ``config.yaml``, ``metrics.jsonl``, ``eval.json``,
``eval_outputs.safetensors`` (per-input results, for ``anytime-report``), ``environment.jsonl`` and
the exact commands are copied to ``results/<protocol folder>/<name>/`` (no weights), and a run whose
results exist is skipped, so the queue can be stopped and restarted at any time, across sessions
and machines.

Three protocols (``--protocol``), each a module of ``examples/cifar_cpu/``: ``underfit`` (the
default; 5,000 images, 10 epochs; results in ``results/cifar10_cpu/``), ``converged`` (1,000
images, 300 epochs, lr chosen on a validation split; ``results/cifar10_cpu_converged/``) and
``checkpoints`` (the shipped checkpoints, then a dense ResNet-20 sgd control: 50,000 images, 100
epochs, hours per run; ``results/cifar10_cpu_checkpoints/``, weights stay in the run folder):

    python examples/reproduce_cifar_cpu.py --data-dir ../shared/datasets/cifar10   # run what is missing
    python examples/reproduce_cifar_cpu.py --list      # the plan: each run done, running, started or todo
    python examples/reproduce_cifar_cpu.py --only w_sgd_s0 w_osgd_s0                 # chosen runs
    python examples/reproduce_cifar_cpu.py --summary results/cifar10_cpu results/h200_paper_archs
                                              # markdown: every measured row next to the paper's
    python examples/reproduce_cifar_cpu.py --sweep-summary results/cifar10_cpu
                                              # the learning-rate sweep on the validation split
    python examples/reproduce_cifar_cpu.py --protocol converged --list
    python examples/reproduce_cifar_cpu.py --converged-summary results/cifar10_cpu_converged
                                              # provenance, mean +/- sd over seeds, convergence, Welch
                                              # tests, plots; all kept in summary.md there
    python examples/reproduce_cifar_cpu.py --protocol checkpoints --runs ../checkpoint_runs
                                              # the shipped checkpoints (hours per run, resumable)
    python examples/reproduce_cifar_cpu.py --checkpoints-summary results/cifar10_cpu_checkpoints
                                              # their errors against the target and the paper's, curves
    python examples/reproduce_cifar_cpu.py --snapshot ../checkpoint_runs/RUN
                                              # a run still training, committable: results/
                                              # cifar10_cpu_checkpoints/in_progress/RUN with progress.md
                                              # (epoch, starts, readings), and its readings

Several workers may run one queue at once (one per core, ``OMP_NUM_THREADS=1``): each claims a run
with a lock file that the operating system releases when the worker exits.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

from cifar_cpu import checkpoints, converged, underfit
from cifar_cpu.runs import is_sweep, label

from timm_anytime.run_files import replace_folder

REPO = Path(__file__).resolve().parents[1]


#: ``--protocol``: (the fixed anytime-train flags, the plan, where results and run folders go).
PROTOCOLS = {
    "underfit": (underfit.PROTOCOL, lambda results: underfit.plan(), "cifar10_cpu", "repro"),
    "converged": (converged.CONVERGED, converged.converged_plan, "cifar10_cpu_converged", "repro_converged"),
    "checkpoints": (checkpoints.CHECKPOINTS, checkpoints.plan, "cifar10_cpu_checkpoints", "checkpoints"),
}


def commands(
    name: str, flags: list[str], data_dir: str, runs: Path, protocol: list[str] = underfit.PROTOCOL
) -> list[list[str]]:
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


def is_done(results: Path, name: str) -> bool:
    """Whether ``name``'s results are in: ``eval.json``, or for a validated-only sweep run its metrics."""
    return (results / name / ("metrics.jsonl" if is_sweep(name) else "eval.json")).is_file()


def run_state(results: Path, runs: Path, name: str) -> str:
    """What ``--list`` says of a run: ``done`` (its results are in), ``running`` (a worker holds its
    lock), ``started, epoch N`` (a run folder to resume from) or ``todo``."""
    if is_done(results, name):
        return "done"
    lock = runs / f"{name}.lock"
    if lock.is_file():  # never create a lock just to look
        held = claim(lock)
        if held is None:
            return "running"
        held.close()
    metrics = runs / name / "metrics.jsonl"
    if metrics.is_file():
        lines = metrics.read_text().splitlines()
        return f"started, epoch {len(lines)}" if lines else "started"
    return "todo"


def claim(lock: Path) -> TextIO | None:
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
        help="print the converged protocol's provenance, tables and tests, write them (summary.md) and its "
        "plots into RESULTS, and stop",
    )
    parser.add_argument(
        "--checkpoints-summary",
        metavar="RESULTS",
        help="print the checkpoint protocol's table, write its learning curves into RESULTS, and stop",
    )
    parser.add_argument(
        "--snapshot",
        metavar="RUN",
        help="copy the run folder RUN of a checkpoint-protocol run still training into RESULTS/in_progress/ "
        "(consistent with its last epoch checkpoint, no lock, learning curves drawn) to commit it, print its "
        "readings, and stop",
    )
    parser.add_argument("--allow-dirty", action="store_true", help="run even with uncommitted changes")
    args = parser.parse_args()
    if args.snapshot:
        results = Path(args.results or REPO / "results" / "cifar10_cpu_checkpoints")
        name = Path(args.snapshot).resolve().name
        # a candidate is read beside the run it builds on, a control beside the runs of its recipe
        finished = [results / ref for ref in checkpoints.compared_with(name)]
        references = [ref for ref in finished if (ref / "metrics.jsonl").is_file()]
        print(checkpoints.snapshot_run(Path(args.snapshot), results / "in_progress" / name, references=references))
        return
    for folder in [*(args.summary or []), args.sweep_summary, args.converged_summary, args.checkpoints_summary]:
        if folder is not None and not Path(folder).is_dir():
            raise SystemExit(f"no results folder {folder}: pass a results/<protocol> folder, e.g. results/cifar10_cpu")
    if args.summary:
        print(underfit.summary([Path(f) for f in args.summary]))
        return
    if args.sweep_summary:
        print(underfit.sweep_summary(Path(args.sweep_summary)))
        return
    if args.converged_summary:
        print(converged.provenance(Path(args.converged_summary)))
        print(converged.converged_summary(Path(args.converged_summary)))
        print(f"wrote {converged.write_summary(Path(args.converged_summary))}")
        for path in converged.plot_converged(Path(args.converged_summary)):
            print(f"wrote {path}")
        return
    if args.checkpoints_summary:
        print(checkpoints.checkpoints_summary(Path(args.checkpoints_summary)))
        print(f"wrote {checkpoints.plot_checkpoints(Path(args.checkpoints_summary))}")
        return
    protocol, make_plan, results_name, runs_name = PROTOCOLS[args.protocol]
    runs = Path(args.runs or REPO / "runs" / runs_name)
    results = Path(args.results or REPO / "results" / results_name)
    plan_now = make_plan(results)
    if args.only:
        unknown = sorted(set(args.only) - set(plan_now))
        if unknown:
            raise SystemExit(
                f"unknown run names {unknown} in the {args.protocol} plan read from {results}: the plan "
                "depends on the results already there (runs at the validated learning rate appear once "
                f"the sweep's results are in), so pass the folder that holds them; see --list --results {results}"
            )

    def todo() -> dict[str, list[str]]:
        """The plan's runs without results (read again after every run: a finished sweep adds runs)."""
        current = make_plan(results)
        names = args.only or list(current)
        return {n: current[n] for n in names if not is_done(results, n)}

    if args.list:
        for name, flags in plan_now.items():
            print(f"{run_state(results, runs, name)}  {name}: {shlex.join(flags)}")
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
            if is_done(results, name):
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
    full = commands(name, flags, "DATA_DIR", Path("runs") / runs_name, protocol)

    def keep_results(staging: Path) -> None:
        staging.mkdir()
        for file in ("config.yaml", "metrics.jsonl", "eval.json", "eval_outputs.safetensors", "environment.jsonl"):
            if not (file.startswith("eval") and is_sweep(name)):
                shutil.copy2(runs / name / file, staging / file)
        (staging / "commands.txt").write_text("\n".join(shlex.join(c) for c in full) + "\n")

    replace_folder(results / name, keep_results)  # results/NAME appears whole or not at all (is_done reads it)
    print(f"== {name} done in {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
