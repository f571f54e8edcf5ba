"""Anytime inference cost, measured side by side: is stage-by-stage inference really incremental?

For each model, with a batch of random images in inference mode, per round:

* ``full``: ``model(x)`` at the last stage: one forward of the largest subnetwork alone.
* ``anytime``: every stage through ``forward_anytime`` (stage k computes only what D_k adds).
* ``recompute``: every stage from scratch (``set_active_stage(k); model(x)`` for k = 1..S).
* ``active k``: ``set_active_stage(k); model(x)``, against ``dense k``: an independent ordinary
  network of stage k's width (``extract_stage(k)``, a timm ResNet / CifarResNet). The switch is
  timed with the forward: a caller may change the stage per input. ``switch`` times one
  ``set_active_stage`` call alone (printed in microseconds).

Variants run interleaved round after round; medians are compared, at batch 1 (the real-time
case: one input, answer as soon as possible) and batch 64. Targets: anytime within 1.10x of full
for the width-nested models and 1.25x for the width-depth-nested ones; active k within 1.10x of
dense k.

    python benchmarks/anytime_inference.py                           # the default models
    python benchmarks/anytime_inference.py --model anytime_cifar_resnet20_w124 --size 32 --batch 1
    python benchmarks/anytime_inference.py --model anytime_cifar_resnet20_w124 --size 32 --batch 1 --compile

``--compile`` adds ``torch.compile`` (inductor) of the last stage alone and of all stages as one
graph: how far fewer Python and per-operator costs would take the incremental path. ``--freeze``
adds both compiled with inductor's ``freezing`` option as well (weights folded in as constants,
convolutions prepacked for oneDNN: inductor's inference mode on CPU). ``--cpp-wrapper`` adds both
compiled with inductor's ``cpp_wrapper`` option (the graph's kernels called from generated C++
instead of a Python wrapper: less fixed cost per kernel).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import timm
import torch

import timm_anytime  # noqa: F401  (registers the models)
from timm_anytime.cpu_allocator import add_cpu_allocator_argument, apply_cpu_allocator
from timm_anytime.train.environment import cpu_name

DEFAULTS = [
    ("anytime_cifar_resnet20_w124", 32),
    ("anytime_cifar_sparse_resnet50_wd_sim", 32),
    ("anytime_resnet50_w124", 224),
]


#: torch.compile (inductor) options of each compiled variant: "frozen" adds inductor's freezing
#: (compiled on first call, in inference mode); "cpp" calls the graph's kernels from generated C++,
#: not from a Python wrapper.
COMPILE_MODES: dict[str, dict[str, bool]] = {"compiled": {}, "frozen": {"freezing": True}, "cpp": {"cpp_wrapper": True}}


def variants(
    model: torch.nn.Module, x: torch.Tensor, compile: bool = False, freeze: bool = False, cpp_wrapper: bool = False
) -> dict[str, Callable[[], object]]:
    stages = model.num_stages

    def at(stage: int) -> Callable[[], object]:
        def run() -> object:
            model.set_active_stage(stage)
            return model(x)

        return run

    def anytime() -> object:
        return list(model.forward_anytime(x))

    def recompute() -> object:
        return [at(k)() for k in range(1, stages + 1)]

    def switch() -> object:  # two calls, so that each one really changes the stage
        model.set_active_stage(1)
        return model.set_active_stage(stages)

    runs: dict[str, Callable[[], object]] = {
        "full": at(stages),
        "anytime": anytime,
        "recompute": recompute,
        "switch": switch,
    }
    # torch.compile of the last stage alone and of all stages as one graph, in each mode asked for
    wanted = {"compiled": compile, "frozen": freeze, "cpp": cpp_wrapper}
    for mode, options in COMPILE_MODES.items():
        if not wanted[mode]:
            continue
        compiled_model = torch.compile(model, options=options)
        compiled_anytime = torch.compile(lambda inp: list(model.forward_anytime(inp)), options=options)

        def full_compiled(compiled_model: Callable[[torch.Tensor], object] = compiled_model) -> object:
            model.set_active_stage(stages)
            return compiled_model(x)

        runs[f"full {mode}"] = full_compiled
        runs[f"anytime {mode}"] = lambda compiled_anytime=compiled_anytime: compiled_anytime(x)
    for k in range(1, stages + 1):
        runs[f"active {k}"] = at(k)
        runs[f"dense {k}"] = model.extract_stage(k).eval()
    return {name: (fn if not isinstance(fn, torch.nn.Module) else (lambda m=fn: m(x))) for name, fn in runs.items()}


def measure(
    name: str,
    size: int,
    batch: int,
    rounds: int,
    warmup: int,
    compile: bool = False,
    freeze: bool = False,
    cpp_wrapper: bool = False,
) -> dict[str, float]:
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    x = torch.randn(batch, 3, size, size)
    runs = variants(model, x, compile, freeze, cpp_wrapper)
    with torch.inference_mode():
        return _time(runs, rounds, warmup)


def _time(runs: dict[str, Callable[[], object]], rounds: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {v: [] for v in runs}
    for _ in range(rounds):
        for variant, run in runs.items():
            start = time.perf_counter()
            run()
            times[variant].append(time.perf_counter() - start)
    return {v: statistics.median(t) for v, t in times.items()}


def report(name: str, size: int, batch: int, median: dict[str, float]) -> None:
    stages = sum(1 for v in median if v.startswith("active"))
    print(f"\n{name}, batch {batch} at {size}x{size} (median seconds per call)")
    print(f"  full (last stage alone)      {median['full']:.4f}")
    ratio = median["anytime"] / median["full"]
    target = 1.25 if "_wd_" in name else 1.10
    print(f"  anytime, all {stages} stages       {median['anytime']:.4f}  = {ratio:.2f}x full (target <= {target:.2f})")
    print(
        f"  recompute every stage        {median['recompute']:.4f}  = {median['recompute'] / median['full']:.2f}x full"
    )
    for mode in COMPILE_MODES:
        if f"anytime {mode}" not in median:
            continue
        full, anytime = median[f"full {mode}"], median[f"anytime {mode}"]
        print(f"  full, {mode:<22} {full:.4f}  = {full / median['full']:.2f}x full")
        print(
            f"  anytime {mode}, one graph{' ' * (10 - len(mode))}{anytime:.4f}  = {anytime / full:.2f}x full {mode}, "
            f"{anytime / median['full']:.2f}x full (no exit between stages: a bound, not the API)"
        )
    if "switch" in median:
        print(f"  set_active_stage, one call   {1e6 * median['switch'] / 2:.0f} us")
    for k in range(1, stages + 1):
        a, d = median[f"active {k}"], median[f"dense {k}"]
        print(f"  stage {k}: active {a:.4f}  dense {d:.4f}  = {a / d:.2f}x dense (target <= 1.10)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="one registered anytime model (default: a CIFAR and an ImageNet one)")
    parser.add_argument("--size", type=int, help="input height and width (default: the model's)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile'd full and all-stages passes (compiles first)"
    )
    parser.add_argument(
        "--freeze", action="store_true", help="also time both compiled with inductor's freezing option (inference)"
    )
    parser.add_argument(
        "--cpp-wrapper", action="store_true", help="also time both compiled with inductor's cpp_wrapper option"
    )
    add_cpu_allocator_argument(parser)
    args = parser.parse_args()
    allocator = apply_cpu_allocator(args.cpu_allocator)
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = DEFAULTS if args.model is None else [(args.model, args.size)]
    print(
        f"anytime inference benchmark: CPU ({cpu_name()}, "
        f"{torch.get_num_threads()} threads), torch {torch.__version__}, timm {timm.__version__}; "
        f"allocator {allocator}"
    )
    for name, size in cases:
        size = size or timm.create_model(name).pretrained_cfg["input_size"][-1]
        for batch in args.batch:
            report(
                name,
                size,
                batch,
                measure(name, size, batch, args.rounds, args.warmup, args.compile, args.freeze, args.cpp_wrapper),
            )


if __name__ == "__main__":
    main()
