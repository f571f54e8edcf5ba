"""Early exit and deadlines with a shipped checkpoint, offline: calibrate, then print the budget curve.

The thresholds are calibrated on images the checkpoint never trained on, and the curve is measured
on other images it never saw (``timm_anytime.data.calibration_split``, from the training subset its
``train_config.yaml`` records): a checkpoint trained on the first N training images of each class
calibrates on the next ``--calibration-per-class`` of each class and is measured on the whole test
split; one trained on all 50,000 (both shipped ``osgd_cifar10_e100`` checkpoints) calibrates on the first
``--calibration-per-class`` test images of each class and is measured on the other test images.

    python examples/early_exit.py --data-dir ../shared/datasets/cifar10
    python examples/early_exit.py --model anytime_cifar_sparse_resnet26_d124.osgd_cifar10_e100 --plot curve.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import timm
import torch

import timm_anytime  # noqa: F401  (registers the models and their shipped weights)
from timm_anytime.data import InMemoryLoader, calibration_split
from timm_anytime.inference import (
    SCORES,
    EarlyExit,
    budget_curve,
    exit_stages,
    predict_within,
    relative_stage_costs,
)
from timm_anytime.inference.early_exit import default_budgets, stage_scores
from timm_anytime.inference.realtime import measure_stage_seconds
from timm_anytime.models.pretrained import SHIPPED, shipped_train_config
from timm_anytime.significance import mcnemar_test

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=SHIPPED[0], choices=SHIPPED)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "datasets" / "cifar10"))
    parser.add_argument("--calibration-per-class", type=int, default=500)
    parser.add_argument("--score", default="max_softmax", help="max_softmax, margin or neg_entropy")
    parser.add_argument("--plot", help="also save the curve as a PNG here")
    args = parser.parse_args()
    if not (Path(args.data_dir) / "train").is_dir():
        raise SystemExit(f"no CIFAR-10 ImageFolder tree at {args.data_dir}: pass --data-dir")

    model = timm.create_model(args.model, pretrained=True).eval()  # the shipped copy: no network needed
    trained_per_class = shipped_train_config(args.model)["train_per_class"]
    held_out, test = calibration_split(
        "cifar10", args.data_dir, trained_per_class=trained_per_class, per_class=args.calibration_per_class
    )
    mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]  # the training data's, as timm's data config
    where = "training" if trained_per_class is not None else "test"
    print(f"calibration: {len(held_out)} {where} images it never trained on; measured on {len(test)} test images")

    def loader(data):
        return InMemoryLoader(data, 500, train=False, mean=mean, std=std)

    # 1. Early exit at one budget: the average cost of stage 2 alone.
    score = SCORES[args.score]
    calibration_scores, _, size = stage_scores(model, loader(held_out), score)
    test_scores, test_correct, _ = stage_scores(model, loader(test), score)
    costs = relative_stage_costs(model, size)
    ee = EarlyExit.from_scores(model, calibration_scores, costs, budget=costs[1], score=args.score)
    images, labels = next(iter(loader(test)))
    logits, stages = ee(images)
    print(f"{args.model}: thresholds {[round(t, 4) for t in ee.thresholds]} for budget {costs[1]:.3f}")
    print(f"  first 500 test images: exit stages {torch.bincount(stages, minlength=4)[1:].tolist()}, ", end="")
    print(f"cost {ee.cost_of(stages):.3f}, error {100 * float((logits.argmax(1) != labels).double().mean()):.2f}%")

    # 2. The budget curve on the whole test split, beside each stage run for every input.
    fixed = [100 * (1 - float(c.double().mean())) for c in test_correct]
    points = budget_curve(calibration_scores, test_scores, test_correct, costs, default_budgets(costs))
    print(f"\n{'budget':>7} {'test cost':>9} {'top-1 err %':>11}   fixed stage at this cost")
    for p in points:
        same = [f"stage {k + 1}: {fixed[k]:.2f}" for k, c in enumerate(costs) if abs(c - p["budget"]) < 1e-9]
        print(f"{p['budget']:>7.3f} {p['test_cost']:>9.3f} {p['test_top1_err']:>11.2f}   {', '.join(same)}")

    # Paired on the same test images: early exit at stage 2's cost against stage 2 for every input
    # (exact McNemar test on the images where exactly one of the two is right).
    at_stage2 = next(p for p in points if abs(p["budget"] - costs[1]) < 1e-9)
    index = torch.arange(test_correct.shape[1])
    early = test_correct[exit_stages(test_scores.double(), at_stage2["thresholds"]) - 1, index]
    paired = mcnemar_test(early.tolist(), test_correct[1].tolist())
    print(
        f"\nat stage 2's cost, n = {paired.n} test images: early exit right where stage 2 is wrong on {paired.only_a}, "
        f"the reverse on {paired.only_b}; exact McNemar p = {paired.p:.2g}"
    )

    # 3. A deadline: the best answer for one image within 1.5x stage 1's measured latency.
    one = images[:1]
    latencies = measure_stage_seconds(model, one)
    deadline = 1.5 * latencies[0]
    _, stage = predict_within(model, one, seconds=deadline, stage_seconds=latencies)
    print(f"\nstage latencies at batch 1 (ms): {[round(1000 * t, 2) for t in latencies]}")
    print(f"predict_within({1000 * deadline:.2f} ms) answered with stage {stage}")

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([p["test_cost"] for p in points], [p["test_top1_err"] for p in points], "o-", label="early exit")
        ax.plot(costs, fixed, "k*", ms=12, label="fixed stages")
        ax.set(xlabel="average cost (fraction of all stages)", ylabel="top-1 error (%)", title=args.model)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.savefig(args.plot, dpi=120, bbox_inches="tight")
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
