"""Does early exit's wall time track its FLOPs saving? Measured side by side on the shipped checkpoints.

For each shipped CIFAR-10 checkpoint and budget, thresholds are calibrated on images the checkpoint
never trained on (``timm_anytime.data.calibration_split``: 500 per class, held-out training images
when it trained on a subset, else test images); then, per round, on the same batch of other test
images (default 256):

* ``all stages``: ``forward_anytime`` through every stage (relative cost 1 by definition).
* ``early exit``: ``EarlyExit(x)``: later stages run only on the inputs still in flight.
* ``stage k``: ``set_active_stage(k); model(x)`` for every k (the fixed-stage alternative).

Variants run interleaved round after round; medians are compared. Printed per budget: the
measured FLOPs ratio of early exit on this batch (its inputs' exit stages) and its wall-time ratio
to ``all stages``; "tracks" is wall ratio / FLOPs ratio (1.0: the saving is fully realized).

    python benchmarks/early_exit.py --data-dir ../shared/datasets/cifar10 --batch 256 --rounds 9
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch

import timm_anytime  # noqa: F401  (registers the models)
from timm_anytime.data import InMemoryLoader, calibration_split
from timm_anytime.inference import SCORES, EarlyExit, relative_stage_costs
from timm_anytime.inference.early_exit import stage_scores
from timm_anytime.models.pretrained import SHIPPED, shipped_train_config


def median_times(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for index in range(rounds + 1):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            if index:  # the first round warms up
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/cifar10"))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--calibration-per-class", type=int, default=500)
    args = parser.parse_args()
    if not (Path(args.data_dir) / "train").is_dir():
        raise SystemExit(f"no CIFAR-10 ImageFolder tree at {args.data_dir}: pass --data-dir")
    torch.set_num_threads(args.threads)
    splits: dict[int | None, tuple] = {}  # (calibration, test) per training subset of the checkpoints
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)")
    print(f"batch {args.batch} CIFAR-10 test images, medians of {args.rounds} interleaved rounds\n")
    with torch.no_grad():
        for name in SHIPPED:
            model = timm.create_model(name, pretrained=True).eval()
            trained_per_class = shipped_train_config(name)["train_per_class"]
            if trained_per_class not in splits:
                splits[trained_per_class] = calibration_split(
                    "cifar10", args.data_dir, trained_per_class=trained_per_class, per_class=args.calibration_per_class
                )
            held_out, test = splits[trained_per_class]
            mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
            calibration = InMemoryLoader(held_out, 500, train=False, mean=mean, std=std)
            x = next(iter(InMemoryLoader(test, args.batch, train=False, mean=mean, std=std)))[0]
            scores, _, size = stage_scores(model, calibration, SCORES["max_softmax"])  # one pass for all budgets
            costs = relative_stage_costs(model, size)
            budgets = [costs[1], 0.5]
            exits = {f"early exit @ {b:.3f}": EarlyExit.from_scores(model, scores, costs, b) for b in budgets}

            def at(stage: int, model=model, x=x) -> Callable[[], object]:
                return lambda: model.set_active_stage(stage)(x)

            runs: dict[str, Callable[[], object]] = {
                "all stages": lambda model=model, x=x: list(model.forward_anytime(x))
            }
            runs.update({variant: (lambda ee=ee, x=x: ee(x)) for variant, ee in exits.items()})
            runs.update({f"stage {k}": at(k) for k in range(1, model.num_stages + 1)})
            times = median_times(runs, args.rounds)
            model.set_active_stage(model.num_stages)
            full = times["all stages"]
            print(f"{name}: relative stage costs {', '.join(f'{c:.3f}' for c in costs)}")
            print(f"  {'variant':<22} {'median ms':>10} {'x all stages':>13} {'FLOPs ratio':>12} {'tracks':>7}")
            for variant, seconds in times.items():
                if variant in exits:
                    flops = exits[variant].cost_of(exits[variant](x)[1])
                elif variant.startswith("stage"):
                    flops = costs[int(variant.split()[1]) - 1]
                else:
                    flops = 1.0
                ratio = seconds / full
                print(f"  {variant:<22} {1000 * seconds:>10.2f} {ratio:>13.3f} {flops:>12.3f} {ratio / flops:>7.2f}")
            print()


if __name__ == "__main__":
    main()
