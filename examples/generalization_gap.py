"""Over- or underfit? A checkpoint's per-stage error on the images it trained on and on the test split.

The training error that ``anytime-train`` logs is measured during each epoch, on augmented images,
with BatchNorm in training mode and the weights still moving. This measures both splits the way a
user would run the model: eval mode, the stored weights, images not augmented. A stage whose
training error is low but whose test error is high overfits; one with both high underfits.

    python examples/generalization_gap.py --data-dir ../shared/datasets/cifar10
    python examples/generalization_gap.py --model anytime_cifar_sparse_resnet26_d124.osgd_cifar10_e100
    python examples/generalization_gap.py --run runs/my_run     # your own anytime-train run (CIFAR)

The training images are those the checkpoint's ``train_config.yaml`` (a run's ``config.yaml``)
records (``train_per_class``: the first N of each class, or all; ``--train-per-class`` overrides
it). A run folder gives its final weights, or its last epoch's while it is still training;
``--weights`` names another file of the run's model, e.g. the weight average of ``--model-ema``:

    python examples/generalization_gap.py --run runs/my_run --weights runs/my_run/model_ema.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

import timm
import torch
from torch import nn

import timm_anytime  # noqa: F401  (registers the models and their shipped weights)
from timm_anytime.data import InMemoryDataset, InMemoryLoader, load_cifar
from timm_anytime.evaluate import stage_correct
from timm_anytime.models.pretrained import SHIPPED, shipped_train_config
from timm_anytime.train import TrainConfig
from timm_anytime.train.checkpoint import MODEL_FILE, CheckpointError, load_weights, run_weights
from timm_anytime.train.environment import describe_commit, git_commit

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = str(REPO.parent / "shared" / "datasets" / "cifar10")


def stage_errors(
    model: nn.Module, data: InMemoryDataset, mean: list[float], std: list[float], batch_size: int = 500
) -> list[float]:
    """Top-1 error (%) of every stage of ``model`` on ``data``: eval mode, images not augmented,
    normalized with ``mean`` and ``std`` in the model's dtype."""
    dtype = next(model.parameters()).dtype
    batches = InMemoryLoader(data, batch_size, train=False, mean=mean, std=std, dtype=dtype)
    top1, _ = stage_correct(model, batches)
    return [100.0 * (1.0 - float(correct.double().mean())) for correct in top1]


def load_run(run: Path, data_dir: str | None, weights: Path | None = None) -> tuple[nn.Module, str, TrainConfig, str]:
    """The model of an ``anytime-train`` run folder with its weights (``weights``, else the final
    ones, else the last epoch's), a label naming them, its config and the dataset folder to read."""
    try:
        cfg = TrainConfig.from_run(run)
    except FileNotFoundError as error:
        raise SystemExit(str(error)) from error
    if cfg.dataset not in ("cifar10", "cifar100"):
        raise SystemExit(f"{run} trained on {cfg.dataset!r}; this measures CIFAR-10/100 runs only")
    if weights is None:
        weights = run_weights(run)
        if not weights.is_file():
            raise SystemExit(f"{run} has no weights yet (no {MODEL_FILE}, no checkpoint): train it first")
        label = f"run {run} ({'final weights' if weights.parent == run else 'last epoch checkpoint'})"
    else:
        label = f"run {run} (weights {weights})"
    num_classes = 10 if cfg.dataset == "cifar10" else 100
    model = timm.create_model(cfg.model, num_classes=num_classes, **cfg.model_kwargs)
    try:
        load_weights(weights, model)
    except CheckpointError as error:
        raise SystemExit(str(error)) from error
    return model.eval(), label, cfg, data_dir or cfg.data_dir or DEFAULT_DATA_DIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", default=SHIPPED[0], choices=SHIPPED, help="a shipped checkpoint")
    source.add_argument("--run", type=Path, help="a run folder of anytime-train instead (CIFAR-10/100)")
    parser.add_argument(
        "--weights", type=Path, help="with --run: this weights file instead, e.g. RUN/model_ema.safetensors"
    )
    parser.add_argument("--data-dir", help=f"the CIFAR ImageFolder tree (default: the run's, else {DEFAULT_DATA_DIR})")
    parser.add_argument(
        "--train-per-class",
        type=int,
        help="the first N training images of each class it trained on (default: what its train_config.yaml records)",
    )
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.train_per_class is not None and args.train_per_class < 1:
        parser.error(f"--train-per-class must be at least 1, got {args.train_per_class}")
    if args.weights is not None and args.run is None:
        parser.error("--weights names a file of a run's model: give the run with --run")
    if args.run is not None:
        model, label, cfg, data_dir = load_run(args.run, args.data_dir, args.weights)
        dataset, recorded_per_class = cfg.dataset, cfg.train_per_class
    else:
        model = timm.create_model(args.model, pretrained=True).eval()  # the shipped copy: no network needed
        label, data_dir = args.model, args.data_dir or DEFAULT_DATA_DIR
        dataset, recorded_per_class = "cifar10", shipped_train_config(args.model)["train_per_class"]
    if not (Path(data_dir) / "train").is_dir():
        raise SystemExit(f"no CIFAR ImageFolder tree at {data_dir}: pass --data-dir")
    if args.threads:
        torch.set_num_threads(args.threads)

    trained_per_class = recorded_per_class if args.train_per_class is None else args.train_per_class
    train, test, spec = load_cifar(dataset, data_dir, train_per_class=trained_per_class)
    mean, std = list(spec.mean), list(spec.std)  # the training data's normalization
    errors = {
        split: stage_errors(model, data, mean, std, args.batch_size)
        for split, data in (("train", train), ("test", test))
    }

    print(f"{label} at revision {describe_commit(git_commit())}, eval mode, images not augmented")
    print(
        f"trained on {len(train)} images ({'all' if trained_per_class is None else f'the first {trained_per_class}'} "
        "of each class); "
        f"tested on {len(test)}"
    )
    print(f"{'stage':>5} {'train err %':>11} {'test err %':>10} {'gap':>6}")
    for stage, (fit, held) in enumerate(zip(errors["train"], errors["test"], strict=True), start=1):
        print(f"{stage:>5} {fit:>11.2f} {held:>10.2f} {held - fit:>6.2f}")


if __name__ == "__main__":
    main()
