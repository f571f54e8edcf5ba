"""Cost of one training step per method, measured side by side in one process.

Every method runs the trainer's own update rule (timm_anytime.train.methods) and stage passes
(timm_anytime.train.stage_passes) on the same model, batch and optimizer; the data are random
(the step's cost does not depend on them). The variants run interleaved, round after round, so
that drift of a noisy machine hits them alike; medians are compared. Prints each method's median
step time and its ratio to the summed-loss SGD step in the same layout, and ``sgd (plain)``: SGD
in the default layout without compile, the reference for the layout and compile gains. Peak
memory: ``torch.cuda.max_memory_allocated`` on CUDA; on the CPU, each method in a fresh process
with glibc returning every block over 64 KiB on free, the peak resident set of three steps above
the resident set before them, counted after one warm-up step (which pages in torch's kernels and
fills its caches) with the kernel's peak counter reset (``/proc/self/clear_refs``, Linux)
(``--memory``).

``--methods ... floor`` adds what any per-stage method must spend at least: the forward pass(es)
and one backward pass per stage of ``osgd``'s stage passes, each only computing the per-stage
gradients (``torch.autograd.grad``), with no combination and no optimizer step. A per-stage method
near ``floor`` spends nothing measurable on combining. ``floor_batched`` gets the same per-stage
gradients from one forward pass of the full network and a single vectorized backward pass
(``torch.autograd.grad(..., is_grads_batched=True)``: one pass carrying all stages' cotangents,
each over the whole graph), the alternative to one backward pass per stage (eager only).
``METHOD+ckpt`` is that method with gradient checkpointing (``--grad-checkpointing``: the single
stage pass, each block recomputed in the backward pass), for its time and ``--memory`` beside it.

    python benchmarks/train_step.py --batch-size 128                        # CPU, ResNet-20 w124
    python benchmarks/train_step.py --batch-size 128 --channels-last --compile
    python benchmarks/train_step.py --device cuda --precision bf16 --batch-size 512 --channels-last --compile
    python benchmarks/train_step.py --methods sgd sgd+ckpt osgd osgd+ckpt --memory   # checkpointing's cost
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import timm
import torch
from accelerate import Accelerator
from timm.optim import create_optimizer_v2
from torch.nn import functional as F

import timm_anytime  # noqa: F401
from osgd import OSGD
from timm_anytime.cpu_allocator import add_cpu_allocator_argument, apply_cpu_allocator
from timm_anytime.train.config import TrainConfig
from timm_anytime.train.methods import OSGD_METHODS, Phase, RuleInputs, build_update_rule
from timm_anytime.train.stage_passes import (
    compile_options,
    compiled_backward_settings,
    resolve_stage_passes,
    separate_stage_losses,
)
from timm_anytime.train.trainer import StageOutputs

METHODS = ("sgd", "adaloss", "normsgd", "osgd", "osgd_norm", "greedy")
FLOOR = "floor"  # per-stage gradients only: the least a per-stage method spends (see the module docstring)
FLOOR_BATCHED = "floor_batched"  # the same gradients from one vectorized backward pass
CHECKPOINTED = "+ckpt"  # suffix: the method with gradient checkpointing


def batched_stage_gradients(losses: list[torch.Tensor], params: list[torch.Tensor]) -> tuple[torch.Tensor | None, ...]:
    """Every loss's gradient with respect to ``params`` from one vectorized backward pass of the
    shared graph: for each parameter a tensor ``[len(losses), *param.shape]`` (None where no loss
    reaches it)."""
    stacked = torch.stack(losses)
    cotangents = torch.eye(len(losses), device=stacked.device, dtype=stacked.dtype)
    return torch.autograd.grad(stacked, params, grad_outputs=cotangents, is_grads_batched=True, allow_unused=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_step(
    method: str,
    args: argparse.Namespace,
    accelerator: Accelerator,
    *,
    channels_last: bool,
    compiled: bool,
    grad_checkpointing: bool = False,
) -> tuple[Callable[[], None], str]:
    """One training step of ``method`` as the trainer runs it; returns it and the stage passes used."""
    torch.manual_seed(0)
    device = accelerator.device
    model = timm.create_model(args.model, num_classes=10).to(device).train()
    if grad_checkpointing:
        model.set_grad_checkpointing(True)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    inner = create_optimizer_v2(model, opt="sgd", lr=0.01, weight_decay=5e-4, momentum=0.9)
    floor, batched = method in (FLOOR, FLOOR_BATCHED), method == FLOOR_BATCHED
    if batched and compiled:
        raise SystemExit(f"{FLOOR_BATCHED} runs eager only: measure it without --compile")
    method = "osgd" if floor else method
    cfg = TrainConfig(model=args.model, dataset="digits", method=method)
    phase = Phase(0, 1, stage=model.num_stages if method == "greedy" else None)  # greedy: its last stage
    optimizer = inner
    if method in OSGD_METHODS:
        # raise, not skip: a skipped step (NaN/inf task gradient) leaves out the update it would time
        optimizer = OSGD(inner, OSGD_METHODS[method], reach_masks=model.osgd_reach_masks(), on_nonfinite="raise")
    rule = build_update_rule(cfg.method, phase, RuleInputs(accelerator, model, optimizer, cfg.stage_weights))
    passes = (
        "single"
        if method == "greedy" or batched
        else resolve_stage_passes(args.stage_passes, method, model, grad_checkpointing)
    )
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    if phase.stage is not None:
        model.set_active_stage(phase.stage)
    outputs = StageOutputs(model)  # compiled as the trainer compiles it
    if compiled:
        outputs.compile(options=compile_options(method, passes))

    def forward_stage(stage: int) -> torch.Tensor:
        model.set_active_stage(stage)
        with accelerator.autocast():
            return outputs(x, only_active=True)[0]

    def stage_losses() -> list[torch.Tensor] | list[Callable[[], torch.Tensor]]:
        """One loss per stage, as the trainer builds them: a function per stage's own forward
        (separate passes), or the tensors of one shared forward (single pass)."""
        if passes == "separate":
            return separate_stage_losses(model, forward_stage, lambda _, z: F.cross_entropy(z.float(), y))
        with accelerator.autocast():
            logits = outputs(x, only_active=phase.stage is not None)
        return [F.cross_entropy(z.float(), y) for z in logits]

    params = [p for p in model.parameters() if p.requires_grad]

    def floor_step() -> None:
        with compiled_backward_settings(compiled, method, passes):
            losses = stage_losses()
            for stage, loss in enumerate(losses, 1):
                shared = isinstance(loss, torch.Tensor)  # one graph: keep it until the last stage
                value = loss if shared else loss()
                torch.autograd.grad(value, params, retain_graph=shared and stage < len(losses), allow_unused=True)
            model.set_active_stage(model.num_stages)

    def batched_floor_step() -> None:  # passes is "single": the stage losses share one graph
        batched_stage_gradients(stage_losses(), params)

    def step() -> None:
        optimizer.zero_grad()
        with compiled_backward_settings(compiled, method, passes):
            rule.backward(stage_losses(), last_micro=True)
            if passes == "separate":
                model.set_active_stage(model.num_stages)
        optimizer.step()
        rule.after_step()

    if batched:
        return batched_floor_step, passes
    return (floor_step if floor else step), passes


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> None:
    """Restart the kernel's peak resident-set counter (VmHWM) from the current resident set."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError as error:
        message = f"--memory on the CPU needs Linux's /proc/self/clear_refs to reset the peak: {error}"
        raise SystemExit(message) from error


def peak_rss_bytes() -> int:
    """The peak resident set since the last :func:`reset_peak_rss` (VmHWM)."""
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def peak_memory_mib(variant: str, args: argparse.Namespace, accelerator: Accelerator) -> float:
    """Peak memory of a few steps of one variant: CUDA allocator peak, or resident-set growth (CPU)."""
    method, channels_last, compiled, checkpointed = parse_variant(variant, args)
    step, _ = build_step(
        method, args, accelerator, channels_last=channels_last, compiled=compiled, grad_checkpointing=checkpointed
    )
    device = accelerator.device
    if device.type == "cuda":
        step()
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(3):
            step()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    # One step first: it pages in torch's kernels (hundreds of MiB of code, the same for every variant,
    # which the peak of the first step would otherwise count) and creates the optimizer's state.
    step()
    reset_peak_rss()
    before = rss_bytes()
    for _ in range(3):
        step()
    return (peak_rss_bytes() - before) / 2**20


def parse_variant(variant: str, args: argparse.Namespace) -> tuple[str, bool, bool, bool]:
    """(method, channels_last, compiled, grad_checkpointing) of a variant name."""
    if variant == "sgd (plain)":
        return "sgd", False, False, False
    checkpointed = variant.endswith(CHECKPOINTED)
    return variant.removesuffix(CHECKPOINTED), args.channels_last, args.compile, checkpointed


def cpu_memory_in_subprocess(variant: str) -> float:
    """Run ``peak_memory_mib`` for one variant in a fresh process (the resident set never shrinks)."""
    argv = [sys.executable, __file__, *sys.argv[1:], "--memory-of", variant]
    # glibc returns every allocation over 64 KiB on free, so the resident set follows live tensors
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout
    return float(json.loads(out.strip().splitlines()[-1])["peak_mib"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="anytime_cifar_resnet20_w124")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=12, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="no", choices=("no", "bf16", "fp16"))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--stage-passes", default="auto", choices=("auto", "single", "separate"))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory (CPU: one process each)")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=None)
    add_cpu_allocator_argument(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    accelerator = Accelerator(cpu=args.device == "cpu", mixed_precision=args.precision)
    allocator = apply_cpu_allocator(args.cpu_allocator) if accelerator.device.type == "cpu" else "n/a (GPU)"
    if args.memory_of:
        print(json.dumps({"peak_mib": peak_memory_mib(args.memory_of, args, accelerator)}))
        return
    device = accelerator.device
    name = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"CPU {platform.processor() or platform.machine()}"
    )
    layout = ("channels_last" if args.channels_last else "default layout") + (", compiled" if args.compile else "")
    print(
        f"{args.model}, batch {args.batch_size}, {args.image_size}x{args.image_size}, precision {args.precision}, "
        f"{layout}, on {name} ({torch.get_num_threads()} threads), torch {torch.__version__}; "
        f"median of {args.rounds} interleaved steps after {args.warmup}; allocator {allocator}"
    )
    variants = list(args.methods)
    if (args.channels_last or args.compile) and "sgd" in variants:
        variants.insert(0, "sgd (plain)")
    steps, passes = {}, {}
    for variant in variants:
        method, channels_last, compiled, checkpointed = parse_variant(variant, args)
        steps[variant], passes[variant] = build_step(
            method, args, accelerator, channels_last=channels_last, compiled=compiled, grad_checkpointing=checkpointed
        )
    times: dict[str, list[float]] = {v: [] for v in variants}
    for round_index in range(args.warmup + args.rounds):
        for variant, step in steps.items():
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            if round_index >= args.warmup:
                times[variant].append(time.perf_counter() - start)
    medians = {v: statistics.median(t) for v, t in times.items()}
    memory = {}
    if args.memory:
        for variant in variants:
            if device.type == "cuda":
                memory[variant] = peak_memory_mib(variant, args, accelerator)
            else:
                memory[variant] = cpu_memory_in_subprocess(variant)
    base = medians.get("sgd", next(iter(medians.values())))
    base_memory = memory.get("sgd")
    header = f"{'method':>13} {'passes':>9} {'ms/step':>9} {'x sgd':>7} {'img/s':>8}"
    if memory:
        header += f" {'peak MiB':>9} {'mem x sgd':>9}"
    print(header)
    for variant, seconds in medians.items():
        line = (
            f"{variant:>13} {passes[variant]:>9} {1000 * seconds:>9.1f} {seconds / base:>7.2f} "
            f"{args.batch_size / seconds:>8.0f}"
        )
        if memory:
            ratio = memory[variant] / base_memory if base_memory else float("nan")
            line += f" {memory[variant]:>9.1f} {ratio:>9.2f}"
        print(line)
    if "sgd (plain)" in medians:
        print(f"sgd in this layout / sgd (plain): {medians['sgd'] / medians['sgd (plain)']:.2f}")


if __name__ == "__main__":
    main()
