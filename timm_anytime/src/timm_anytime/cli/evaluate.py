"""``anytime-eval``: per-stage error, FLOPs, parameters and latency of a trained run."""

from __future__ import annotations

import argparse
import sys

from ..evaluate import evaluate_run, format_stages
from . import run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="anytime-eval",
        description="Evaluate a run folder of anytime-train as an anytime predictor; writes eval.json and "
        "eval_outputs.safetensors (per-input results for the deadline simulation).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("run", help="run folder written by anytime-train")
    p.add_argument("--weights", help="a model.safetensors to evaluate instead of the run's final weights")
    p.add_argument("--data-dir", help="dataset folder, if not the one the run was trained with")
    p.add_argument("--batch-size", type=int, help="evaluation batch size (default: the run's)")
    p.add_argument("--latency-inputs", type=int, default=200, help="inputs timed one by one for the latency")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--output", help="folder for the results (default: the run folder)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def job() -> None:
        if args.latency_inputs < 1:
            raise ValueError(f"--latency-inputs must be at least 1, got {args.latency_inputs}")
        result = evaluate_run(
            args.run,
            weights=args.weights,
            data_dir=args.data_dir,
            batch_size=args.batch_size,
            latency_inputs=args.latency_inputs,
            device=args.device,
            output=args.output,
            progress=args.progress,
        )
        print(format_stages(result))

    return run("anytime-eval", job)


if __name__ == "__main__":
    sys.exit(main())
