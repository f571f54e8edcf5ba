"""``anytime-report``: the paper's tables and plots from evaluated run folders."""

from __future__ import annotations

import argparse
import sys

from ..report import write_report
from . import run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="anytime-report",
        description="Error per stage (Tables 1-2, Fig. 8), error against FLOPs with the Oracle (Fig. 9) and the "
        "deadline simulation (Fig. 10) for runs evaluated by anytime-eval. Plain networks are the Oracle.",
    )
    p.add_argument("runs", nargs="+", help="run folders holding eval.json")
    p.add_argument("--output", required=True, help="folder for report.md and the PNG plots")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def job() -> None:
        path = write_report(args.runs, args.output)
        print(path.read_text())
        print(f"report: {path}")

    return run("anytime-report", job)


if __name__ == "__main__":
    sys.exit(main())
