"""Time and memory of one OSGD training step, side by side with summed-loss SGD and the floor.

The model is a 3-exit CNN (CIFAR-sized input): task i reads the output after stage i, so it
reaches the stem, stages 1..i and its own head, as in an anytime cascade. Per step:

* ``summed``: one forward, ``sum(losses).backward()``, ``SGD.step()``: ordinary training.
* ``floor``: one forward, one ``torch.autograd.grad`` per task over the parameters it reaches,
  ``SGD.step()``: the least any per-task-gradient method can cost (no combination at all).
* ``osgd`` / ``norm``: ``OSGD.backward(losses)`` then ``OSGD.step()``.

Variants run interleaved, round after round, and the medians are compared, so machine noise
hits every variant alike. Peak memory is measured in a fresh process per variant: CUDA's
``max_memory_allocated``, or on CPU the growth of the process's peak resident set, with glibc told
to return every allocation over 64 KiB to the system on free (``MALLOC_MMAP_THRESHOLD_``) so that
the resident set follows live tensors (stable to about 1 MiB between runs).

    python benchmarks/osgd_step.py                     # CPU, batch 64, about a minute
    python benchmarks/osgd_step.py --device cuda --batch 256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F

from osgd import OSGD

VARIANTS = ("summed", "floor", "osgd", "norm")


class ThreeExitCNN(nn.Module):
    def __init__(self, width: int = 32, classes: int = 10) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        widths = (width, 2 * width, 4 * width)
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.stages = nn.ModuleList(
            [block(width, widths[0], 1), block(widths[0], widths[1], 2), block(widths[1], widths[2], 2)]
        )
        self.heads = nn.ModuleList(nn.Linear(w, classes) for w in widths)

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem(x)
        out = []
        for stage, head in zip(self.stages, self.heads, strict=True):
            h = stage(h)
            out.append(F.cross_entropy(head(h.mean((2, 3))), y))
        return out


def make_step(variant: str, model: ThreeExitCNN, x: torch.Tensor, y: torch.Tensor):
    params = list(model.parameters())
    sgd = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    if variant == "summed":

        def step() -> None:
            sgd.zero_grad()
            losses = model.losses(x, y)
            (sum(losses) / len(losses)).backward()
            sgd.step()

    elif variant == "floor":

        def step() -> None:
            sgd.zero_grad()
            losses = model.losses(x, y)
            for i, loss in enumerate(losses):
                grads = torch.autograd.grad(loss, params, retain_graph=i < len(losses) - 1, allow_unused=True)
            for p, g in zip(params, grads, strict=True):  # the last task reaches every parameter
                p.grad = g
            sgd.step()

    else:
        opt = OSGD(sgd, method=variant)

        def step() -> None:
            opt.zero_grad()
            opt.backward(model.losses(x, y))
            opt.step()

    return step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def setup(args: argparse.Namespace) -> tuple[ThreeExitCNN, torch.Tensor, torch.Tensor, torch.device]:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = ThreeExitCNN(args.width).to(device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    return model, x, y, device


def peak_rss_bytes() -> int:
    """This process's peak resident set. Linux's VmHWM starts afresh at exec; ru_maxrss does not
    (it inherits the parent's peak), so it is only the fallback off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def measure_memory(args: argparse.Namespace) -> None:
    """Child process: print the peak memory of one variant's steps, in MiB."""
    model, x, y, device = setup(args)
    step = make_step(args.memory_probe, model, x, y)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        with torch.no_grad():
            model.losses(x, y)  # touch the allocator once, so the baseline includes the forward
        base = peak_rss_bytes()
    for _ in range(3):
        step()
    synchronize(device)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss_bytes()) - base
    print(json.dumps({"peak_mib": peak / 2**20}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32, help="input height and width")
    parser.add_argument("--width", type=int, default=32, help="channels of the first stage")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--memory-probe", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        measure_memory(args)
        return

    model, x, y, device = setup(args)
    steps = {v: make_step(v, model, x, y) for v in VARIANTS}
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for variant, step in steps.items():
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            times[variant].append(time.perf_counter() - start)
    median = {v: statistics.median(t) for v, t in times.items()}

    memory = {}
    for variant in VARIANTS:
        cmd = [sys.executable, __file__, "--memory-probe", variant, "--device", args.device]
        cmd += ["--batch", str(args.batch), "--size", str(args.size), "--width", str(args.width)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        result = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        memory[variant] = json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]

    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"OSGD step benchmark: 3-exit CNN, batch {args.batch} at {args.size}x{args.size}, {args.rounds} rounds, "
        f"device {device} ({hardware}, {torch.get_num_threads()} threads), torch {torch.__version__}"
    )
    print(f"{'variant':<8} {'median ms':>10} {'vs summed':>10} {'vs floor':>9} {'peak MiB':>9}")
    for variant in VARIANTS:
        print(
            f"{variant:<8} {median[variant] * 1e3:>10.1f} {median[variant] / median['summed']:>10.2f} "
            f"{median[variant] / median['floor']:>9.2f} {memory[variant]:>9.1f}"
        )
    for variant in ("osgd", "norm"):
        ratio = median[variant] / median["floor"]
        verdict = "meets" if ratio <= 1.10 else "MISSES"
        print(
            f"{variant}: {ratio:.3f}x the floor ({verdict} the 1.10x target); "
            f"floor predicts {median['floor'] / median['summed']:.2f}x summed SGD, measured "
            f"{median[variant] / median['summed']:.2f}x"
        )


if __name__ == "__main__":
    main()
