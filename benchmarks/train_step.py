"""Cost of one training step per method, measured side by side in one process.

Every method runs the trainer's own update rule (timm_anytime.train.methods) on the same model,
batch and optimizer; the data are random (the step's cost does not depend on them). Prints the
median step time, its ratio to the summed-loss SGD step, and peak GPU memory on CUDA.

    python benchmarks/train_step.py                       # CPU: anytime_cifar_resnet20_w124, batch 64
    python benchmarks/train_step.py --device cuda --batch-size 128 --model anytime_cifar_resnet42_w124
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch
from accelerate import Accelerator
from timm.optim import create_optimizer_v2
from torch.nn import functional as F

import timm_anytime  # noqa: F401
from osgd import OSGD
from timm_anytime.train.config import OSGD_METHODS, TrainConfig
from timm_anytime.train.methods import Phase, build_update_rule

METHODS = ("sgd", "adaloss", "normsgd", "osgd", "osgd_norm", "greedy")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(method: str, args: argparse.Namespace, accelerator: Accelerator) -> tuple[float, float]:
    torch.manual_seed(0)
    device = accelerator.device
    model = timm.create_model(args.model, num_classes=10).to(device).train()
    inner = create_optimizer_v2(model, opt="sgd", lr=0.01, weight_decay=5e-4, momentum=0.9)
    cfg = TrainConfig(model=args.model, dataset="digits", method=method)
    phase = Phase(0, 1, stage=model.num_stages if method == "greedy" else None)  # greedy: its last stage
    optimizer = inner
    if method in OSGD_METHODS:
        optimizer = OSGD(inner, OSGD_METHODS[method], reach_masks=model.osgd_reach_masks())
    rule = build_update_rule(cfg, accelerator, model, optimizer, phase)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    if phase.stage is not None:
        model.set_active_stage(phase.stage)
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(args.warmup + args.steps):
        synchronize(device)
        start = time.perf_counter()
        optimizer.zero_grad()
        with accelerator.autocast():
            logits = [model(x)] if phase.stage is not None else model.forward_stages(x)
        rule.backward([F.cross_entropy(z.float(), y) for z in logits], last_micro=True)
        optimizer.step()
        rule.after_step()
        synchronize(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return statistics.median(times), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="anytime_cifar_resnet20_w124")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="no", choices=("no", "bf16", "fp16"))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    args = parser.parse_args()
    accelerator = Accelerator(cpu=args.device == "cpu", mixed_precision=args.precision)
    name = torch.cuda.get_device_name() if accelerator.device.type == "cuda" else "CPU"
    print(
        f"{args.model}, batch {args.batch_size}, {args.image_size}x{args.image_size}, precision {args.precision}, "
        f"on {name} ({torch.get_num_threads()} threads), median of {args.steps} steps after {args.warmup}"
    )
    results = {method: measure(method, args, accelerator) for method in args.methods}
    base = results.get("sgd", next(iter(results.values())))[0]
    print(f"{'method':>10} {'ms/step':>9} {'x sgd':>7} {'peak MiB':>9}")
    for method, (seconds, peak) in results.items():
        memory = f"{peak:>9.1f}" if peak == peak else f"{'n/a':>9}"
        print(f"{method:>10} {1000 * seconds:>9.2f} {seconds / base:>7.2f} {memory}")


if __name__ == "__main__":
    main()
