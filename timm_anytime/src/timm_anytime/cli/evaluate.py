"""``anytime-eval``: per-stage error, FLOPs, parameters and latency of a trained run."""

from __future__ import annotations

import argparse
import sys

from ..cpu_allocator import add_cpu_allocator_argument
from ..run_evaluation import CALIBRATION_PER_CLASS, evaluate_run, format_early_exit, format_stages
from . import DefaultsHelpFormatter, run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="anytime-eval",
        description="Evaluate a run folder of anytime-train (or a published checkpoint) as an anytime predictor; "
        "writes eval.json and eval_outputs.safetensors (per-input results for the deadline simulation).",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument(
        "run",
        help="run folder written by anytime-train; or a checkpoint published by anytime-push (needs --output): "
        "its folder, hf-hub:ORG/NAME, or the name of a shipped one (e.g. "
        "anytime_cifar_resnet20_w124.osgd_cutout_cifar10_e200)",
    )
    p.add_argument("--weights", help="a model.safetensors to evaluate instead of the run's final weights")
    p.add_argument("--data-dir", help="dataset folder, if not the one the run was trained with")
    p.add_argument("--batch-size", type=int, help="evaluation batch size (default: the run's)")
    p.add_argument("--latency-inputs", type=int, default=200, help="inputs timed one by one for the latency")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--output", help="folder for the results (default: the run folder)")
    add_cpu_allocator_argument(p)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    g = p.add_argument_group("early exit (timm_anytime.inference.EarlyExit)")
    g.add_argument(
        "--early-exit",
        action="store_true",
        help="also write the budgeted curve (error against average FLOPs) into eval.json; thresholds are "
        "calibrated on training images the run never trained on, never on the test split",
    )
    g.add_argument(
        "--calibration-per-class",
        type=int,
        default=CALIBRATION_PER_CLASS,
        help="held-out training images per class for the calibration (those after --train-per-class)",
    )
    g.add_argument("--budgets", type=float, nargs="+", help="fractions of the cost of every stage (default: a grid)")
    g.add_argument("--score", default="max_softmax", help="confidence score: max_softmax, margin or neg_entropy")
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
            early_exit=args.early_exit,
            calibration_per_class=args.calibration_per_class,
            budgets=args.budgets,
            score=args.score,
            cpu_allocator=args.cpu_allocator,
        )
        print(format_stages(result))
        if args.early_exit:
            print(format_early_exit(result))

    return run("anytime-eval", job)


if __name__ == "__main__":
    sys.exit(main())
