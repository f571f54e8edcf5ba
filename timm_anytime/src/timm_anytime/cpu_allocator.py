"""The C allocator setting for CPU training and benchmarks: keep freed memory for reuse.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves blocks above its mmap
threshold with a fresh ``mmap()`` and unmaps them on ``free``, and it returns free memory at the
top of its heap to the operating system (trimming). The threshold adapts upwards after the first
frees, but trimming still returns the heap's top whenever more than twice the threshold lies free
there, so a training step's activations and gradients (megabytes each) keep going back to the
system and coming back page by page, zeroed by the kernel. The per-stage methods, which allocate
and free more per step, pay most (docs/training.md, "CPU allocator").

:func:`keep_freed_memory` sets glibc's mmap threshold to its maximum (32 MiB on 64-bit systems) and
turns trimming off, so freed blocks stay in the process and the next step reuses them. Results do
not change (only where memory comes from); the price is that the process keeps its peak memory
until it exits, as a caching GPU allocator does. It changes nothing where the environment already
chose: one of glibc's ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``,
``MALLOC_MMAP_MAX_``, ``GLIBC_TUNABLES`` with malloc settings, or an allocator in
``LD_PRELOAD`` (jemalloc, tcmalloc, mimalloc), and nothing outside glibc. The same setting from the
shell: ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=-1``.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
from typing import Any

#: ``cpu_allocator`` choices: ``tuned`` applies :func:`keep_freed_memory`, ``system`` leaves malloc alone
CPU_ALLOCATORS = ("tuned", "system")

# glibc's malloc.h parameters for mallopt(), and its largest mmap threshold on 64-bit systems
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 2**20
_PRELOADED_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")
#: glibc's environment variables for what keep_freed_memory() sets (and how big blocks are served)
GLIBC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")

_applied: str | None = None  # what keep_freed_memory() set in this process


def environment_choice() -> str | None:
    """The allocator setting the environment already made (which is kept), or None."""
    variables = [name for name in GLIBC_VARIABLES if name in os.environ]
    if variables:
        return f"{', '.join(variables)} set"
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES sets malloc"
    preload = os.environ.get("LD_PRELOAD", "")
    if any(name in preload for name in _PRELOADED_ALLOCATORS):
        return f"LD_PRELOAD={preload}"
    return None


def keep_freed_memory() -> str:
    """Keep freed memory in the process (glibc: mmap threshold 32 MiB, no trimming) unless the
    environment chose an allocator setting; returns the setting in effect, for run records and
    benchmark headers. Process-wide, and not undone: call it only in a process you own (a training
    or benchmark run), never on import."""
    global _applied
    if _applied is not None:
        return _applied
    chosen = environment_choice()
    if chosen is not None:
        return f"system ({chosen})"
    if platform.libc_ver()[0] != "glibc":
        return "system (not glibc)"
    libc = ctypes.CDLL("libc.so.6")
    # The threshold first: fixing it also stops glibc adapting it, and trimming off with the
    # default 128 KiB threshold would send every large block to mmap (much slower).
    if not libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX):
        return "system (glibc refused the mmap threshold)"
    if not libc.mallopt(M_TRIM_THRESHOLD, -1):
        _applied = f"tuned in part (glibc malloc: mmap threshold {MMAP_THRESHOLD_MAX >> 20} MiB; trimming refused)"
        return _applied
    _applied = f"tuned (glibc malloc: mmap threshold {MMAP_THRESHOLD_MAX >> 20} MiB, no trimming)"
    return _applied


def apply_cpu_allocator(choice: str) -> str:
    """Apply ``choice`` (one of :data:`CPU_ALLOCATORS`); returns the setting in effect."""
    if choice not in CPU_ALLOCATORS:
        raise ValueError(f"cpu_allocator must be one of {', '.join(CPU_ALLOCATORS)}; got {choice!r}")
    if choice == "tuned":
        return keep_freed_memory()
    return _applied or f"system ({environment_choice() or 'malloc as the C library configures it'})"


def add_cpu_allocator_argument(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, default: str | None = "tuned"
) -> None:
    """Add ``--cpu-allocator`` (one of :data:`CPU_ALLOCATORS`) to a command line. ``default=None``
    adds no default of its own, so the parser's applies (``anytime-train``'s ``SUPPRESS``: a
    config file's choice stands unless the flag is given)."""
    own_default: dict[str, Any] = {} if default is None else {"default": default}
    parser.add_argument(
        "--cpu-allocator",
        choices=CPU_ALLOCATORS,
        **own_default,
        help="CPU runs: tuned (default) keeps freed memory for reuse (glibc malloc: faster steps, the process "
        "keeps its peak memory); system leaves malloc as the environment set it",
    )
