r"""Is revision B faster than revision A? Run one benchmark at both, alternating, and test the ratios.

On a shared or virtual machine the absolute time of the same code drifts between runs (on this
project's 2-core VM, up to 2x from one run to the next), so two revisions cannot be compared by
running a benchmark once at each. This script checks both revisions out into temporary git
worktrees, runs the same benchmark command in each, alternating A, B, A, B, ... ``--reps`` times,
and compares the within-run ratios the benchmark prints (each measured side by side in one run, so
the drift cancels): per ratio, mean +/- sd at each revision and Welch's test of the difference
(``timm_anytime.significance.welch_test``).

A ratio is any output line holding ``= 1.23x`` (as ``benchmarks/anytime_inference.py`` prints
them) or ending in ``: 1.23`` (``benchmarks/train_step.py``'s layout line); it is named by the
text before its first decimal number and by the unindented line above it (the model and batch).

    python benchmarks/compare_revisions.py 740c3e2 HEAD --reps 6 -- \
        benchmarks/anytime_inference.py --model anytime_cifar_resnet20_w124 --size 32 --batch 1 --rounds 25
    python benchmarks/compare_revisions.py main WORKTREE --pause "cli.train" -- benchmarks/train_step.py
    python benchmarks/compare_revisions.py ce9cc79 HEAD --pattern "(?P<name>osgd) +\S+ +\S+ +(?P<value>\S+)" \
        -- benchmarks/train_step.py --methods sgd osgd         # the 'x sgd' column of train_step's table

``WORKTREE`` stands for the working tree as it is, uncommitted changes included. ``--pause PATTERN``
stops the processes whose command line matches (``pgrep -f``) while the benchmark runs, such as a
training run in the background, and resumes them at the end, also on an error or Ctrl-C. Each run
imports ``osgd`` and ``timm_anytime`` from its own revision (``PYTHONPATH``) with this interpreter;
the script checks that it does before measuring anything.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKTREE = "WORKTREE"

_RATIO = re.compile(r"=\s*(\d+\.\d+)x")
_TRAILING = re.compile(r":\s*(\d+\.\d+)\s*$")
_DECIMAL = re.compile(r"\d+\.\d+")


def parse_ratios(output: str, pattern: str | None = None) -> dict[tuple[str, str], float]:
    """``{(section, name): ratio}`` for every ratio line of a benchmark's ``output`` (see the module
    docstring). The section is the last unindented line before an indented ratio line, without its
    parenthesis; an unindented ratio line has none. With ``pattern`` (a regular expression with the
    named groups ``name`` and ``value``), every line it matches instead, in no section."""
    ratios: dict[tuple[str, str], float] = {}
    if pattern is not None:
        regex = re.compile(pattern)
        if not {"name", "value"} <= set(regex.groupindex):
            raise ValueError(f"--pattern needs the named groups (?P<name>...) and (?P<value>...), got {pattern!r}")
        for line in output.splitlines():
            match = regex.search(line)
            if match is not None:
                ratios[("", match.group("name").strip())] = float(match.group("value"))
        return ratios
    section = ""
    for line in output.splitlines():
        indented = line[:1].isspace()
        match = _RATIO.search(line) or _TRAILING.search(line)
        if line.strip() and not indented and match is None:
            section = line.split("(")[0].strip().rstrip(",:")
        if match is None:
            continue
        head = line[: match.start()]
        first = _DECIMAL.search(head)
        name = (head[: first.start()] if first else head).strip().rstrip(":").strip()
        ratios[(section if indented else "", name)] = float(match.group(1))
    return ratios


@contextmanager
def checked_out(revisions: list[str]) -> Iterator[dict[str, Path]]:
    """A temporary worktree per revision (``WORKTREE``: the working tree itself), removed afterwards."""
    trees: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="compare-revisions-") as scratch:
        try:
            for index, revision in enumerate(revisions):
                if revision == WORKTREE:
                    trees[revision] = REPO
                    continue
                commit = subprocess.run(
                    ["git", "rev-parse", "--verify", f"{revision}^{{commit}}"],
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                )
                if commit.returncode != 0:
                    raise SystemExit(f"unknown revision {revision!r}: give a commit, branch or tag (or {WORKTREE})")
                path = Path(scratch) / f"rev{index}"
                subprocess.run(
                    ["git", "worktree", "add", "--detach", "--quiet", str(path), commit.stdout.strip()],
                    cwd=REPO,
                    check=True,
                )
                trees[revision] = path
            yield trees
        finally:
            for revision, path in trees.items():
                if revision != WORKTREE:
                    subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO, check=False)


@contextmanager
def paused(pattern: str | None) -> Iterator[list[int]]:
    """SIGSTOP the processes matching ``pattern`` (``pgrep -f``) and SIGCONT them on the way out."""
    pids: list[int] = []
    if pattern:
        found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
        pids = [int(pid) for pid in found if int(pid) not in (os.getpid(), os.getppid())]  # not this script's
    stopped = []
    try:
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        yield stopped
    finally:
        for pid in stopped:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def tree_state(tree: Path) -> tuple[str, bool]:
    """The commit checked out in ``tree`` and whether its working tree differs from it."""
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tree, capture_output=True, text=True).stdout.strip()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=tree, capture_output=True, text=True).stdout
    return commit, bool(status.strip())


def describe(revision: str, tree: Path) -> str:
    commit, dirty = tree_state(tree)
    return f"{revision} ({commit[:7]}{', with uncommitted changes' if dirty else ''})"


def _environment(tree: Path) -> dict[str, str]:
    paths = [str(tree / "osgd" / "src"), str(tree / "timm_anytime" / "src")]
    return dict(os.environ, PYTHONPATH=os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))


def check_imports(tree: Path) -> None:
    """Fail unless a run in ``tree`` imports ``osgd`` and ``timm_anytime`` from ``tree`` itself (an
    install that shadows ``PYTHONPATH`` would make both revisions run the same code)."""
    code = "import osgd, timm_anytime; print(osgd.__file__); print(timm_anytime.__file__)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, env=_environment(tree), capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"cannot import osgd and timm_anytime in {tree}:\n{result.stderr[-2000:]}")
    for file in result.stdout.split():
        if not Path(file).resolve().is_relative_to(tree.resolve()):
            raise SystemExit(
                f"a run in {tree} imports {file}, not the revision's own code: an installed copy shadows "
                "PYTHONPATH; install the packages in editable mode (pip install -e) or uninstall them"
            )


def run_benchmark(tree: Path, command: list[str]) -> str:
    result = subprocess.run(
        [sys.executable, *command], cwd=tree, env=_environment(tree), capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"the benchmark failed in {tree} (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


def summarize(a: str, b: str, samples: dict[str, dict[tuple[str, str], list[float]]]) -> str:
    """Per ratio: mean +/- sd at ``a`` and at ``b``, and Welch's test of ``b - a``."""
    from timm_anytime.significance import welch_test

    def spread(values: list[float]) -> str:
        return f"{statistics.fmean(values):.3f} +/- {statistics.stdev(values):.3f}"

    lines, section = [f"{'ratio':<32} {a[:16]:>16} {b[:16]:>16}  B - A (Welch)"], None
    for key, first in samples[a].items():
        second = samples[b].get(key, [])
        if len(first) < 2 or len(second) < 2:
            continue
        if key[0] != section:
            section = key[0]
            if section:
                lines.append(section)
        try:
            test = str(welch_test(second, first))
        except ValueError as error:  # both samples constant
            test = f"untestable: {error}"
        lines.append(f"  {key[1][:30]:<30} {spread(first):>16} {spread(second):>16}  {test}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        usage="%(prog)s A B [--reps N] [--pause PATTERN] -- BENCHMARK [ARGS ...]",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("a", help="the base revision (commit, branch, tag or WORKTREE)")
    parser.add_argument("b", help="the revision to compare with it")
    parser.add_argument("--reps", type=int, default=4, help="runs at each revision, alternating (default 4)")
    parser.add_argument("--pause", metavar="PATTERN", help="pause matching processes (pgrep -f) while measuring")
    parser.add_argument(
        "--pattern",
        metavar="REGEX",
        help="read the ratios with this regular expression (named groups 'name' and 'value') instead",
    )
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, command = parser.parse_args(argv[:split]), argv[split + 1 :]
    if not command:
        parser.error("give the benchmark after --, e.g. -- benchmarks/anytime_inference.py --batch 1")
    if args.reps < 2:
        parser.error("--reps must be at least 2: a test needs two runs per revision")
    if args.a == args.b:
        parser.error("the two revisions are the same")
    try:
        parse_ratios("", args.pattern)
    except (ValueError, re.error) as error:
        parser.error(str(error))
    samples: dict[str, dict[tuple[str, str], list[float]]] = {args.a: {}, args.b: {}}
    with checked_out([args.a, args.b]) as trees, paused(args.pause) as stopped:
        if stopped:
            print(f"paused {len(stopped)} process(es) matching {args.pause!r}")
        for revision in (args.a, args.b):
            check_imports(trees[revision])
            print(f"{revision}: {describe(revision, trees[revision])}")
        for rep in range(1, args.reps + 1):
            for revision in (args.a, args.b):
                ratios = parse_ratios(run_benchmark(trees[revision], command), args.pattern)
                if not ratios:
                    expected = args.pattern or "'= 1.23x' or 'name: 1.23'"
                    raise SystemExit(f"the benchmark printed no ratio ({expected}) at {revision}: nothing to compare")
                for name, value in ratios.items():
                    samples[revision].setdefault(name, []).append(value)
                print(f"run {rep}/{args.reps} at {revision}: {len(ratios)} ratios", flush=True)
    print(f"\nmeans +/- sd over {args.reps} alternating runs; 'B - A' is {args.b} minus {args.a}")
    print(summarize(args.a, args.b, samples))


if __name__ == "__main__":
    main()
