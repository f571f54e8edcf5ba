"""The main job: train a width-nested anytime network with OSGD and with SGD, train its Oracle
(an independent plain network of each stage's width), evaluate everything as anytime predictors
and write the paper's views (error per stage, error against FLOPs, deadlines).

Offline on scikit-learn's bundled 8x8 digits (the default: 2 seeds, about 1 minute on 2 CPU cores):

    python examples/anytime_compare.py

CIFAR-10 from an ImageFolder tree, at CPU scale (a subset, a short schedule):

    python examples/anytime_compare.py --config examples/configs/cifar10_cpu_resnet20_w124.yaml \\
        --data-dir ../shared/datasets/cifar10 --output runs/cifar10_cpu

The same steps as commands (this script calls the functions behind them):

    anytime-train --config CONFIG --method osgd --output runs/x/osgd_s0
    anytime-eval runs/x/osgd_s0
    anytime-report runs/x/* --output runs/x/report

Everything here is small-scale and CPU-only: compare it with the paper's numbers for what it is.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from timm_anytime.report import load_results, markdown_table, write_report
from timm_anytime.run_evaluation import evaluate_run
from timm_anytime.train import TrainConfig, train
from timm_anytime.train.config import read_yaml

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "digits_resnet20_w124.yaml"


def oracle_widths(model: str) -> tuple[str, list[float]] | None:
    """The plain network and stage widths matching a width-nested model, e.g.
    ``anytime_cifar_resnet20_w124`` -> ``cifar_resnet20`` at widths 1/4, 1/2, 1."""
    match = re.fullmatch(r"anytime_(\w+?)_w(\d+)", model)
    if match is None:
        return None
    units = [int(d) for d in match.group(2)]
    return match.group(1), [u / units[-1] for u in units]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="base settings (YAML)")
    parser.add_argument("--data-dir", help="dataset folder (CIFAR-10 ImageFolder tree)")
    parser.add_argument("--epochs", type=int, help="override the config's epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--methods", nargs="+", default=["sgd", "osgd"])
    parser.add_argument("--output", default="runs/digits")
    parser.add_argument("--no-oracle", dest="oracle", action="store_false", help="skip the independent networks")
    args = parser.parse_args()

    base = read_yaml(args.config)
    base.update(overwrite=True, progress=False)  # a demo: each rerun replaces its own earlier results
    if args.data_dir:
        base["data_dir"] = args.data_dir
    if args.epochs:
        base["epochs"] = args.epochs
    out = Path(args.output)
    jobs = [
        TrainConfig.from_dict({**base, "method": m, "seed": s, "output": str(out / f"{m}_s{s}")})
        for s in args.seeds
        for m in args.methods
    ]
    plain = oracle_widths(base["model"]) if args.oracle else None
    if plain is not None:
        name, widths = plain
        for width in widths:
            label = f"oracle_w{width:g}"
            settings = {**base, "model": name, "model_kwargs": {"width": width}, "method": "sgd", "name": label}
            jobs.append(TrainConfig.from_dict({**settings, "output": str(out / label)}))

    started = time.perf_counter()
    for number, cfg in enumerate(jobs, 1):
        print(f"[{number}/{len(jobs)}] {cfg.label}: {cfg.model} seed {cfg.seed}, {cfg.epochs} epochs -> {cfg.output}")
        evaluate_run(train(cfg), progress=False)
    folders = [cfg.output for cfg in jobs]
    report = write_report(folders, out / "report")

    print()
    print(markdown_table(load_results(folders)))
    print(f"\nreport with plots (error per stage, error vs FLOPs, deadlines): {report}")
    print(f"total {time.perf_counter() - started:.0f} s (CPU, small scale: not the paper's setting)")


if __name__ == "__main__":
    main()
