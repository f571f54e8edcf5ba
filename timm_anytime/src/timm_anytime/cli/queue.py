"""``anytime-queue``: run the commands of a file, one per line, keeping K in flight (one GPU, many runs)."""

from __future__ import annotations

import argparse
import sys

from ..train.queue import read_commands, run_queue
from . import DefaultsHelpFormatter, run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="anytime-queue",
        description="Run the shell commands of a file (one per line), keeping K in flight.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("commands", help="file with one shell command per line (# starts a comment)")
    p.add_argument("--jobs", "-j", type=int, default=2, help="commands in flight at once")
    p.add_argument("--logs", default="runs/queue", help="folder for each command's log and queue.json")
    p.add_argument("--budget-s", type=float, help="stop everything after this many seconds (default: no limit)")
    p.add_argument("--margin-s", type=float, default=0.0, help="start nothing in the last MARGIN_S of the budget")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    failed: list[str] = []

    def job() -> None:
        queue = run_queue(
            read_commands(args.commands),
            jobs=args.jobs,
            logs=args.logs,
            budget_s=args.budget_s,
            margin_s=args.margin_s,
            progress=args.progress,
        )
        for entry in queue:
            took = "" if entry.started is None or entry.ended is None else f" in {entry.ended - entry.started:.1f} s"
            print(f"[{entry.status}{took}] {entry.command}  (log: {entry.log})")
        failed.extend(entry.log for entry in queue if entry.status == "failed")

    status = run("anytime-queue", job)
    if status == 0 and failed:
        print(f"anytime-queue: {len(failed)} command(s) failed; see {', '.join(failed)}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
