"""Calibrate C (``--norm-scale``) of normsgd and osgd_norm for one model and dataset.

NormSGD (eq. 2) rescales each stage's gradient g_i to the norm ``C * sqrt(d_i)``, so every
parameter moves by about ``lr * C`` per step whatever its gradient; C takes the place of the
gradient's own scale. The paper sets C "using calibration experiments" and reports C = 1/2 for its
setup. This script measures the scale that plain training actually has: it trains the model with
ordinary SGD (the summed stage losses, the ``sgd`` method) for ``--steps`` steps and records, per
step and stage, ``|g_i| / sqrt(d_i)``, the root-mean-square gradient per parameter the stage
reaches. Their median is a C at which NormSGD takes steps of SGD's size at the start of training.

    python examples/calibrate_norm_scale.py --model anytime_cifar_resnet20_w124 \\
        --data-dir ../shared/datasets/cifar10 --train-per-class 500

It takes the training flags of ``anytime-train`` (model, data, lr, batch size, seed); about a
minute for a CIFAR ResNet-20 on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from timm.optim import create_optimizer_v2

from osgd import OSGD
from timm_anytime.models.anytime import stage_logits
from timm_anytime.train.config import config_from_args
from timm_anytime.train.loaders import first_training_batches, load_sources, make_loaders
from timm_anytime.train.trainer import create_model


def measure(argv: list[str], steps: int) -> list[list[float]]:
    """``|g_i| / sqrt(d_i)`` per step (rows) and stage (columns) along an SGD trajectory."""
    cfg = config_from_args([*argv, "--method=sgd"])
    torch.manual_seed(cfg.seed)
    sources = load_sources(cfg, progress=False)
    if not sources.in_memory:
        raise SystemExit("calibration reads the in-memory datasets (digits, cifar10, cifar100)")
    model = create_model(cfg, sources.num_classes, sources.in_chans).train()
    loader = make_loaders(cfg, sources, model, Accelerator(cpu=True)).train  # the trainer's batches
    inner = create_optimizer_v2(model, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum)
    masks = model.osgd_reach_masks() if hasattr(model, "osgd_reach_masks") else None
    # method="sum" with the mean reduction is exactly the sgd method's update (mean of the stage
    # losses), computed per stage so that the per-stage norms are visible.
    optimizer = OSGD(inner, "sum", reduction="mean", reach_masks=masks)
    rows: list[list[float]] = []
    for images, labels in first_training_batches(loader, steps):
        losses = [F.cross_entropy(logits, labels) for logits in stage_logits(model, images)]
        optimizer.zero_grad()
        info = optimizer.backward(losses)
        optimizer.step()
        rows.append((info.grad_norm / info.task_dims.sqrt()).tolist())
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=False)
    parser.add_argument("--steps", type=int, default=39, help="SGD steps to measure (39: one epoch of 5,000 images)")
    args, train_argv = parser.parse_known_args()
    if "-h" in train_argv or "--help" in train_argv:
        print(__doc__)
        extra = "and the training flags of `anytime-train --help` (model, data, lr, batch size, seed)"
        print(f"{parser.format_help().rstrip()}\n  {extra}")
        parser.exit()
    try:
        rows = measure(train_argv, args.steps)
    except (ValueError, FileNotFoundError) as error:  # a wrong model name, a missing data folder
        raise SystemExit(f"error: {error}") from None
    stages = list(zip(*rows, strict=True))
    for i, column in enumerate(stages, 1):
        median = statistics.median(column)
        print(f"stage {i}: |g_i|/sqrt(d_i) median {median:.4g}  first {column[0]:.4g}  last {column[-1]:.4g}")
    c = statistics.median(value for row in rows for value in row)
    print(f"calibrated C (median over {len(rows)} steps and {len(stages)} stages): {c:.3g}")
    print(f"use: anytime-train ... --method normsgd --norm-scale {c:.2g}", file=sys.stderr)


if __name__ == "__main__":
    main()
