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

from .runs import DEPTH, WIDTH, final_errors, finished_runs

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

#: Issue 15's target for the last stage's test error of the CPU checkpoints, in %.
TARGET_LAST_STAGE_ERR = 10.0

#: The paper's Table 1 (CIFAR-10, OSGD, 200 epochs, mean of 3 runs) for its nearest network of
#: each design, for side-by-side comparison: larger networks than these, trained twice as long.
PAPER_OSGD = {
    "w": ("width-nested ResNet-42 w124", [12.3, 8.9, 7.3]),
    "d": ("depth-nested Sparse ResNet-98 d1248", [10.0, 8.4, 7.4, 6.6]),
}


def plan(results: Path | None = None) -> dict[str, list[str]]:
    """Run name -> ``anytime-train`` flags: ResNet-20 w124 first (half the cost of the other)."""
    return {f"{tag}_osgd_s0": [f"--model={model}", "--method=osgd"] for tag, model in (("w", WIDTH), ("d", DEPTH))}


def checkpoints_summary(results: Path) -> str:
    """Markdown: per finished run, its test error per stage against the target and the paper's
    nearest network, then the convergence rule per run (``timm_anytime.learning_curves``)."""
    from timm_anytime.learning_curves import convergence_table, read_learning_curve

    done = [run for run in finished_runs(results) if run.name[0] in PAPER_OSGD]
    curves = {run.name: read_learning_curve(run) for run in done}  # each metrics.jsonl read once
    lines = [
        "| run | model | epochs | test err % per stage | last stage <= "
        f"{TARGET_LAST_STAGE_ERR:g}% | final training err % per stage | paper (OSGD, 200 epochs) |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in done:
        cfg, errors, epoch = final_errors(run)
        train = curves[run.name].train_err[-1]
        paper, paper_errors = PAPER_OSGD[run.name[0]]
        lines.append(
            f"| {run.name} | {cfg['model']} | {epoch} | {' / '.join(f'{e:.2f}' for e in errors)} "
            f"| {'yes' if errors[-1] <= TARGET_LAST_STAGE_ERR else '**no**'} | "
            f"{' / '.join(f'{e:.2f}' for e in train)} | {paper}: {' / '.join(f'{e:.1f}' for e in paper_errors)} |"
        )
    lines += ["", convergence_table(curves)]
    return "\n".join(lines)


def plot_checkpoints(results: Path) -> Path:
    """``learning_curves.png`` in ``results``: one panel per finished run (training and test error
    per stage, learning rate)."""
    from timm_anytime.learning_curves import plot_learning_curves, read_learning_curve

    curves = {run.name: read_learning_curve(run) for run in finished_runs(results)}
    return plot_learning_curves(curves, results / "learning_curves.png", max_panels=len(curves) or 1)
