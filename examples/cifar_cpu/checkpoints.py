"""The checkpoint protocol (issue 15, item 5): the CIFAR-10 checkpoints this package ships, trained
with OSGD on all 50,000 training images, with the paper's schedule shape (lr 0.1, x0.2 after 30,
60 and 80% of the epochs, momentum 0.9, weight decay 5e-4, batch 128) over 100 epochs (the
paper's: 200), evaluated on the full 10,000-image test split.

A run costs many hours on one CPU core (ResNet-20 w124 with OSGD: about 5 minutes an epoch on
this project's 2-core VM, single-threaded, compiled), so it checkpoints every epoch and the queue
resumes it (``--runs`` outside the worktree keeps the run folder across checkouts):

    python examples/reproduce_cifar_cpu.py --protocol checkpoints --runs ../checkpoint_runs

Its test error is read every 10 epochs to show progress; nothing is chosen on it: the last epoch
is what ships.
"""

from __future__ import annotations

from pathlib import Path

from .runs import DEPTH, WIDTH

#: ``--channels-last --compile`` change float rounding only (docs/training.md). Single-threaded,
#: they made an OSGD step of ResNet-20 w124 at batch 128 1.68x faster on the 2-core VM (2,231 ->
#: 1,327 ms, medians of 8; ``benchmarks/train_step.py --threads 1``, beside two other runs).
CHECKPOINTS = [
    "--dataset=cifar10",
    "--epochs=100",
    "--batch-size=128",
    "--lr=0.1",
    "--eval-every=10",
    "--channels-last",
    "--compile",
]

#: The ``pretrained_cfg`` tag of what this protocol trains (``<architecture>.<tag>``).
TAG = "osgd_cifar10_e100"


def plan(results: Path | None = None) -> dict[str, list[str]]:
    """Run name -> ``anytime-train`` flags: ResNet-20 w124 first (half the cost of the other)."""
    return {f"{tag}_osgd_s0": [f"--model={model}", "--method=osgd"] for tag, model in (("w", WIDTH), ("d", DEPTH))}
