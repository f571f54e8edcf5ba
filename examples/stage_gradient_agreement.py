"""How much the stages of a trained anytime run agree, and what each combination gives each stage.

For a run folder of ``anytime-train`` (``config.yaml`` and ``model.safetensors``), on the run's own
training batches (its augmentation, BatchNorm in training mode, the weights never updated), this
measures per batch the Gramian ``G = J J^T`` of the stage gradients and prints:

* the mean cosine between every two stages' gradients;
* per stage, the first-order loss decrease of one step, ``g_k . g``, as a multiple of the stage's
  own ``|g_k|^2``, for the plain sum (sgd on the summed losses) and for osgd in each priority order
  given. Under osgd the highest-priority stage gets exactly 1.00: its own gradient's descent.

Above 1 a stage is helped by the others' gradients, below 1 it is held back.

    python examples/stage_gradient_agreement.py runs/w_osgd_lr0.05_s0 --batches 16 \\
        --priority 1 2 3 --priority 2 1 3 --priority 3 2 1

About half a minute per run for a CIFAR ResNet-20 w124 on 2 CPU cores (16 batches of 64).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from osgd import OSGD, gram_schmidt
from timm_anytime.models.anytime import is_anytime_model, stage_logits
from timm_anytime.train import TrainConfig
from timm_anytime.train.checkpoint import load_weights, run_weights
from timm_anytime.train.loaders import first_training_batches, load_sources, make_loaders
from timm_anytime.train.trainer import create_model


def stage_gramians(run: Path, batches: int, data_dir: str | None = None) -> list[torch.Tensor]:
    """The float64 Gramian of the stage gradients on each of ``batches`` training batches of ``run``."""
    cfg = TrainConfig.from_run(run, data_dir)
    torch.manual_seed(cfg.seed)
    sources = load_sources(cfg, progress=False)
    model = create_model(cfg, sources.num_classes, sources.in_chans)
    if not is_anytime_model(model):
        raise ValueError(f"{cfg.model} has one stage: there is nothing to compare")
    load_weights(run_weights(run), model)
    model.train()
    loader = make_loaders(cfg, sources, model, Accelerator(cpu=True)).train  # the trainer's batches
    # lr 0 and no step: OSGD is used only for its per-stage backward and Gramian.
    optimizer = OSGD(torch.optim.SGD(model.parameters(), lr=0.0), "sum")
    gramians: list[torch.Tensor] = []
    for images, labels in first_training_batches(loader, batches):
        losses = [F.cross_entropy(logits, labels) for logits in stage_logits(model, images)]
        optimizer.zero_grad()
        gramians.append(optimizer.backward(losses).gram.clone())
    return gramians


def relative_descent(gram: torch.Tensor, order: list[int] | None) -> torch.Tensor:
    """``g_k . g / |g_k|^2`` per stage for the sum (``order`` None) or osgd in ``order`` (0-based)."""
    n = gram.shape[0]
    weights = torch.ones(n, dtype=torch.float64) if order is None else gram_schmidt(gram, order)[0]
    return (gram @ weights) / gram.diagonal()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of anytime-train")
    parser.add_argument("--batches", type=int, default=16, help="training batches to average over")
    parser.add_argument(
        "--priority", nargs="+", type=int, action="append", help="an osgd order, highest first, 1-based (repeatable)"
    )
    parser.add_argument("--data-dir", help="where the run's dataset is now, if it moved")
    args = parser.parse_args()
    for run in args.runs:
        try:
            gramians = stage_gramians(run, args.batches, args.data_dir)
        except (ValueError, FileNotFoundError) as error:
            raise SystemExit(f"error: {error}") from None
        n = gramians[0].shape[0]
        orders = args.priority or [list(range(1, n + 1))]
        for order in orders:
            if sorted(order) != list(range(1, n + 1)):
                raise SystemExit(f"error: --priority {order} must list stages 1..{n} once each")
        stacked = torch.stack(gramians)
        norms = stacked.diagonal(dim1=1, dim2=2).sqrt()
        cosine = (stacked / (norms[:, :, None] * norms[:, None, :])).mean(0)
        print(f"{run} ({len(gramians)} training batches)")
        pairs = [f"{i + 1}-{j + 1} {cosine[i, j]:+.2f}" for i in range(n) for j in range(i + 1, n)]
        print(f"  mean cosine of the stage gradients: {', '.join(pairs)}")
        print(f"  mean |g_k|: {' / '.join(f'{v:.3f}' for v in norms.mean(0).tolist())}")
        rows = [("sum (sgd)", None)] + [(f"osgd {''.join(map(str, o))}", [p - 1 for p in o]) for o in orders]
        for label, order in rows:
            ratio = torch.stack([relative_descent(g, order) for g in gramians]).mean(0)
            print(f"  g_k . g / |g_k|^2, {label:>9}: {' / '.join(f'{v:.2f}' for v in ratio.tolist())}")


if __name__ == "__main__":
    main()
