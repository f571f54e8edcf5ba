"""OSGD on an ordinary multitask problem: one shared network, three different tasks.

Data: scikit-learn's bundled 8x8 handwritten digits (1,797 real images, no download). A shared MLP
trunk feeds three heads: the digit class (cross-entropy), its parity (binary cross-entropy) and a
reconstruction of the input image (mean squared error): three losses of different kinds and scales
competing for the same trunk. Every method trains the same network from the same initialization;
the table reports held-out metrics (mean and spread over seeds) and the plot goes to --out.
"osgd, reduction=mean" divides OSGD's sum by the number of tasks, as SGD averages the losses: it
separates the effect of OSGD's longer step from the effect of its projection.

    python examples/osgd_multitask_digits.py            # about 45 s on 2 CPU cores
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from osgd import OSGD

TASKS = ("digit", "parity", "reconstruction")
# C of the normalized methods is calibrated per problem, as the paper does: the paper's 0.5 (per
# sqrt(parameter)) suits its BatchNorm ResNets; this plain MLP diverges with it. 0.02 was the best of
# {0.005, 0.01, 0.02, 0.05} for both normalized methods on seed 0.
NORM_SCALE = 0.02
METHODS = {  # label: OSGD arguments
    "sum (SGD)": {"method": "sum"},
    "norm (NormSGD)": {"method": "norm", "norm_scale": NORM_SCALE},
    "osgd": {"method": "osgd"},
    "osgd, reduction=mean": {"method": "osgd", "reduction": "mean"},
    "osgd_norm": {"method": "osgd_norm", "norm_scale": NORM_SCALE},
    "osgd, priority 2,0,1": {"method": "osgd", "priority": [2, 0, 1]},
}


def load_digits_tensors(seed: int = 0) -> tuple[torch.Tensor, ...]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - a clear message for a bare install
        raise SystemExit("this example needs scikit-learn: pip install scikit-learn") from error
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    test, train = order[:500], order[500:]
    return x[train], y[train], x[test], y[test]


class SharedTrunk(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU())
        self.digit = nn.Linear(64, 10)
        self.parity = nn.Linear(64, 1)
        self.decoder = nn.Linear(64, 64)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.digit(h), self.parity(h).squeeze(-1), self.decoder(h)

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        digit, parity, recon = self(x)
        return [
            F.cross_entropy(digit, y),
            F.binary_cross_entropy_with_logits(parity, (y % 2).float()),
            F.mse_loss(recon, x),
        ]


@torch.no_grad()
def evaluate(model: SharedTrunk, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    digit, parity, recon = model(x)
    return {
        "digit": (digit.argmax(1) == y).float().mean().item() * 100,
        "parity": ((parity > 0).long() == y % 2).float().mean().item() * 100,
        "reconstruction": F.mse_loss(recon, x).item(),
    }


def train(options: dict, seed: int, epochs: int, data: tuple[torch.Tensor, ...]) -> dict[str, float]:
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(seed)
    model = SharedTrunk()
    opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), **options)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for index in torch.randperm(len(x_train), generator=gen).split(64):
            opt.zero_grad()
            opt.backward(model.losses(x_train[index], y_train[index]))
            opt.step()
        scheduler.step()
    metrics = evaluate(model, x_test, y_test)
    metrics["cos(digit, recon)"] = float(opt.last_info.cosine[0, 2]) if opt.last_info is not None else 0.0
    return metrics


def sample_sd(values: list[float]) -> float:
    """The sample standard deviation over seeds (n - 1 in the denominator); 0 for a single seed."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def plot(results: dict[str, list[dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    labels = list(results)
    for ax, task in zip(axes, TASKS, strict=True):
        values = [[run[task] for run in results[label]] for label in labels]
        means = [statistics.mean(v) for v in values]
        spread = [sample_sd(v) for v in values]
        ax.barh(labels, means, xerr=spread, color="#4c72b0")
        ax.set_title(f"{task}: {'test MSE (lower is better)' if task == 'reconstruction' else 'test accuracy %'}")
        if task != "reconstruction":
            ax.set_xlim(min(means) - 5, 100)
        ax.invert_yaxis()
    fig.suptitle("OSGD on a 3-task MLP, scikit-learn digits (500 test images), CPU")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def print_welch_tests(results: dict[str, list[dict[str, float]]], reference: str = "sum (SGD)") -> None:
    """Each method minus ``reference`` per task: difference [95% CI], Welch p (needs 2+ seeds).
    The t-test comes from timm_anytime.significance, installed with the project's dev environment."""
    from timm_anytime.significance import welch_test

    print(f"\nminus {reference}, per task: difference [95% CI], Welch p")
    print(f"{'method':<22}" + "".join(f"{task:>38}" for task in TASKS))
    for label, runs in results.items():
        if label == reference:
            continue
        cells = []
        for task in TASKS:
            digits = 4 if task == "reconstruction" else 1
            try:
                w = welch_test([run[task] for run in runs], [run[task] for run in results[reference]])
            except ValueError:  # every seed of both gave the same number
                cells.append("no spread: untestable")
                continue
            low, high = w.ci95
            cells.append(f"{w.difference:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}] p={w.p:.3f}")
        print(f"{label:<22}" + "".join(f"{cell:>38}" for cell in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("runs/osgd_multitask_digits.png"))
    args = parser.parse_args()
    if args.epochs < 1 or args.seeds < 1:
        parser.error("--epochs and --seeds must be at least 1")

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    data = load_digits_tensors()
    start = time.perf_counter()
    results = {
        label: [train(options, seed, args.epochs, data) for seed in range(args.seeds)]
        for label, options in tqdm(METHODS.items(), desc="methods", unit="method")
    }
    spread = "mean (sample sd)" if args.seeds > 1 else "one seed, no spread"
    print(f"\nscikit-learn digits, {args.epochs} epochs, n = {args.seeds} seeds, {spread}, measured on CPU")
    header = f"{'method':<22}" + "".join(f"{name:>20}" for name in (*TASKS, "cos(digit, recon)"))
    print(header)
    print("-" * len(header))
    for label, runs in results.items():
        cells = []
        for key in (*TASKS, "cos(digit, recon)"):
            values = [run[key] for run in runs]
            digits = 4 if key in ("reconstruction", "cos(digit, recon)") else 1
            sd = f" ({sample_sd(values):.{digits}f})" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.{digits}f}{sd}")
        print(f"{label:<22}" + "".join(f"{cell:>20}" for cell in cells))
    if args.seeds > 1:
        print_welch_tests(results)
    plot(results, args.out)
    print(f"\nplot: {args.out}   total time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
