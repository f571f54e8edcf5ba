"""Aggregate training throughput of K independent runs packed onto one device, for K = 1, 2, 4, 8.

Each run is a separate process started by ``anytime-queue``'s queue (timm_anytime.train.queue)
with K in flight; it trains the model on random data resident on the device (the trainer's step:
``benchmarks/train_step.py``'s ``build_step``) for a fixed time after a warmup and reports its
images per second. The aggregate is the sum over the K runs (their timed windows overlap), printed
with its ratio to one run alone. The runs start their timed windows together: each waits after its
warmup until all K are ready (a file barrier), so that a run whose interpreter started late does
not time its window alone and inflate the sum. A run that fails before its window (an OOM at
8 runs, say) marks the barrier failed, so the others stop at once instead of waiting for it.

    python benchmarks/concurrent_runs.py --device cuda --precision bf16 --channels-last --batch-size 512
    python benchmarks/concurrent_runs.py --counts 1 2 --seconds 20 --threads 1     # CPU, 1 core each
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path


def worker(args: argparse.Namespace) -> None:
    import torch
    from accelerate import Accelerator

    sys.path.insert(0, str(Path(__file__).parent))
    from train_step import build_step, synchronize

    if args.threads:
        torch.set_num_threads(args.threads)
    barrier = Path(args.barrier) if args.barrier else None
    try:
        accelerator = Accelerator(cpu=args.device == "cpu", mixed_precision=args.precision)
        step, _ = build_step(args.method, args, accelerator, channels_last=args.channels_last, compiled=args.compile)
        device = accelerator.device
        for _ in range(args.warmup):
            step()
        synchronize(device)
    except BaseException:
        if barrier:  # tell the runs waiting at the barrier not to wait for this one (an OOM at 8 runs, say)
            barrier.mkdir(parents=True, exist_ok=True)
            (barrier / f"failed_{os.getpid()}").touch()
        raise
    if barrier:
        wait_for_all(barrier, args.runs)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < args.seconds:
        step()
        steps += 1
        if device.type == "cuda" and steps % 10:
            continue  # read the clock only every 10 steps on a GPU: no host sync per step
        synchronize(device)
    synchronize(device)
    elapsed = time.perf_counter() - start
    print(json.dumps({"images_per_s": steps * args.batch_size / elapsed, "steps": steps}))


def wait_for_all(barrier: Path, runs: int, timeout_s: float = 600.0) -> None:
    """Mark this run ready in ``barrier`` and return once ``runs`` runs are (10 ms polling).

    Exits at once if another run marked itself failed before getting ready, instead of waiting out
    ``timeout_s`` for a run that will never come.
    """
    barrier.mkdir(parents=True, exist_ok=True)
    (barrier / f"ready_{os.getpid()}").touch()
    deadline = time.monotonic() + timeout_s
    while len(list(barrier.glob("ready_*"))) < runs:
        if failed := sorted(path.name for path in barrier.glob("failed_*")):
            sys.exit(f"another run failed before its timed window ({', '.join(failed)}); see its log")
        if time.monotonic() > deadline:
            sys.exit(f"only {len(list(barrier.glob('ready_*')))} of {runs} runs got ready within {timeout_s:.0f} s")
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="anytime_cifar_resnet20_w124")
    parser.add_argument("--method", default="sgd")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="no", choices=("no", "bf16", "fp16"))
    parser.add_argument("--stage-passes", default="auto", choices=("auto", "single", "separate"))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seconds", type=float, default=20.0, help="timed window of every run")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (compilation, cuDNN autotune)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per run")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--barrier", help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    from timm_anytime.train.queue import run_queue

    forwarded = [
        f"--{name.replace('_', '-')}={value}"
        for name, value in vars(args).items()
        if name not in ("counts", "worker", "channels_last", "compile", "threads", "barrier", "runs")
        and value is not None
    ]
    forwarded += ["--channels-last"] * args.channels_last + ["--compile"] * args.compile
    forwarded += [f"--threads={args.threads}"] if args.threads else []
    command = [sys.executable, __file__, *forwarded, "--worker"]
    print(
        f"{args.model}, {args.method}, batch {args.batch_size}, {args.device}, precision {args.precision}, "
        f"channels_last {args.channels_last}, compile {args.compile}; {args.seconds:.0f} s timed per run"
    )
    print(f"{'runs':>5} {'img/s (sum)':>12} {'x one run':>10} {'per run':>9}")
    single = None
    for count in args.counts:
        with tempfile.TemporaryDirectory() as logs:
            line = shlex.join([*command, f"--barrier={Path(logs) / 'barrier'}", f"--runs={count}"])
            queue = run_queue([line] * count, jobs=count, logs=logs, progress=False)
            failed = [job for job in queue if job.status != "done"]
            if failed:
                sys.exit(f"a run failed with {count} in flight:\n" + Path(failed[0].log).read_text()[-2000:])
            rates = [json.loads(Path(job.log).read_text().strip().splitlines()[-1])["images_per_s"] for job in queue]
        total = sum(rates)
        single = single or total
        print(f"{count:>5} {total:>12.0f} {total / single:>10.2f} {total / count:>9.0f}")


if __name__ == "__main__":
    main()
