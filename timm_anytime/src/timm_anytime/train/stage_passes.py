"""How the per-stage losses of one micro-batch are computed for the per-stage backward passes.

* ``single``: one pass of ``forward_stages``; every stage's loss comes from the full network's
  graph. Cheapest when each stage's loss reaches only its own subnetwork anyway (depth nesting,
  the cascade) and for one summed backward (``sgd``).
* ``separate``: one forward of each D_k alone (``set_active_stage(k)``), each with its own graph,
  handed to :class:`osgd.OSGD` as a loss function so that only one stage's activations live at a
  time. In a width-nested network the single pass runs L_1's backward through full-width layers
  although D_1 is a fraction of them; the separate passes restrict every stage's backward to its
  own subnetwork, with dense kernels. The per-stage gradients are the same: nesting means D_k's
  channels never read later stripes, and BatchNorm is per channel. BatchNorm statistics are
  updated once per step, by the D_S pass (which updates exactly what the single pass updates);
  the passes of D_1..D_(S-1) normalize with batch statistics but leave the running ones alone.

``auto`` picks ``separate`` for the methods with per-stage backward passes (normsgd, osgd,
osgd_norm) on models that declare ``separate_stage_passes`` (width- and width-depth-nested), and
``single`` otherwise. ``benchmarks/train_step.py --stage-passes`` measures both.

Under ``torch.compile``, the single pass of a per-stage method runs the compiled backward once per
stage on one kept graph; :func:`compile_options` and :func:`compiled_backward_settings` keep torch
from reusing a backward compiled for a single use there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch._functorch.config
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .config import STAGE_PASSES
from .methods import OSGD_METHODS


def resolve_stage_passes(setting: str, method: str, model: nn.Module, grad_checkpointing: bool = False) -> str:
    """``single`` or ``separate`` for this method and model (see the module docstring). Gradient
    checkpointing needs ``single``: it recomputes each block in the backward pass, when the separate
    passes have already switched the active stage and BatchNorm's statistics mode back."""
    if setting not in STAGE_PASSES:
        raise ValueError(f"stage_passes must be one of {', '.join(STAGE_PASSES)}; got {setting!r}")
    supported = bool(getattr(model, "separate_stage_passes", False))
    if grad_checkpointing:
        if setting == "separate":
            raise ValueError(
                "grad_checkpointing recomputes each block in the backward pass, after the separate stage passes have "
                "switched the active stage back: use --stage-passes single (auto picks it with --grad-checkpointing)"
            )
        return "single"
    if setting == "separate":
        if not supported:
            raise ValueError(
                f"stage_passes='separate' needs a model whose stages can run alone with the same gradients "
                f"(width- or width-depth-nested); {type(model).__name__} does not declare separate_stage_passes. "
                "Use --stage-passes auto."
            )
        if method not in OSGD_METHODS:
            raise ValueError(
                f"stage_passes='separate' applies to the per-stage methods {', '.join(OSGD_METHODS)}, not "
                f"{method!r} (one summed backward is cheapest from the single pass)"
            )
        return "separate"
    if setting == "auto" and supported and method in OSGD_METHODS:
        return "separate"
    return "single"


@contextlib.contextmanager
def frozen_batchnorm_statistics(model: nn.Module) -> Iterator[None]:
    """Inside, every BatchNorm of ``model`` normalizes with batch statistics (in training) but
    neither updates its running statistics nor counts the batch."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    for norm in norms:
        norm.track_running_stats = False
    try:
        yield
    finally:
        for norm in norms:
            norm.track_running_stats = True


def separate_stage_losses(
    model: nn.Module,
    forward_stage: Callable[[int], Tensor],
    loss_of: Callable[[int, Tensor], Tensor],
) -> list[Callable[[], Tensor]]:
    """One loss function per stage for ``OSGD.backward``: stage k's runs ``forward_stage(k)`` (D_k's
    logits from its own forward) and returns ``loss_of(k, logits)``. Only the last stage's pass
    updates BatchNorm statistics; call each function once per step."""
    num_stages: int = model.num_stages  # type: ignore[assignment]  # a plain int; nn.Module's type says Tensor | Module

    def stage_loss(stage: int) -> Callable[[], Tensor]:
        def compute() -> Tensor:
            freeze = stage < num_stages
            with frozen_batchnorm_statistics(model) if freeze else contextlib.nullcontext():
                logits = forward_stage(stage)
            return loss_of(stage, logits)

        return compute

    return [stage_loss(k) for k in range(1, num_stages + 1)]


def keeps_graph(method: str, passes: str) -> bool:
    """Whether a step keeps its graph between backward passes: the single pass of a per-stage
    method (normsgd, osgd, osgd_norm) runs one backward pass per stage on one graph."""
    return passes == "single" and method in OSGD_METHODS


#: The oldest torch that compiles a model whose graph is kept between backward passes: torch 2.6
#: stops in the second stage's backward pass ("non-empty donated buffers"); 2.8.0 passes the
#: compile tests (CONTRIBUTING.md, "Supported versions"); 2.7.1 fails earlier on the CPU, in every
#: compiled training step (inductor generates C++ that does not build), so it is not known there.
KEPT_GRAPH_COMPILE_MIN_TORCH = "2.8"


def check_compile_support(method: str, passes: str) -> None:
    """Refuse ``--compile`` where :func:`keeps_graph` on a torch older than
    :data:`KEPT_GRAPH_COMPILE_MIN_TORCH`, before the run writes anything."""
    if keeps_graph(method, passes) and torch.__version__ < KEPT_GRAPH_COMPILE_MIN_TORCH:
        raise ValueError(  # a setting this torch cannot run: one line from the CLI, no traceback
            f"--compile with method {method!r} and the single stage pass keeps the compiled graph between "
            f"the stages' backward passes, which needs torch {KEPT_GRAPH_COMPILE_MIN_TORCH} or later (this is "
            f"torch {torch.__version__}). Use --stage-passes separate, leave out --compile, or upgrade torch."
        )


#: ``torch.compile`` options for a model whose graph is kept between backward passes (see
#: :func:`compiled_backward_settings`). Options unequal to the default make a separate compile:
#: torch reuses a compiled graph, backward included, only under equal options.
KEPT_GRAPH_COMPILE_OPTIONS: dict[str, bool] = {"fx_graph_cache": False}


def compile_options(method: str, passes: str) -> dict[str, bool] | None:
    """The ``options`` for ``torch.compile`` of a model trained with ``method`` and ``passes``:
    :data:`KEPT_GRAPH_COMPILE_OPTIONS` where :func:`keeps_graph`, else ``None`` (torch's defaults)."""
    return dict(KEPT_GRAPH_COMPILE_OPTIONS) if keeps_graph(method, passes) else None


@contextlib.contextmanager
def compiled_backward_settings(compiled: bool, method: str, passes: str) -> Iterator[None]:
    """Wrap the training steps in this when ``compiled``, and compile the model with
    :func:`compile_options` (:data:`KEPT_GRAPH_COMPILE_OPTIONS` where :func:`keeps_graph`).

    torch (2.14) compiles a backward pass lazily: for one use of its saved activations if the first
    backward pass frees the graph (*donated buffers*, which the compiled backward overwrites), and
    without that if it keeps the graph. Reusing a one-use backward for a kept graph gave silently
    wrong gradients to every stage after the first (measured with channels_last), and torch reuses
    one when it reads a compiled graph from its on-disk caches (written, for example, by an earlier
    sgd run of the same model and shapes: the depth-nested model at batch 64) or from an earlier
    compile of the same model class in this process under equal options. So for kept graphs the
    options make a compile of their own that reads and writes no FX graph cache, and this context
    turns off AOTAutograd's cache: each such run compiles its own graphs (minutes on a CPU).
    Elsewhere this changes nothing. Donated buffers stay on: with them off, torch no longer raises
    its "non-empty donated buffers" error on a reused one-use backward, and returns wrong gradients
    instead (measured)."""
    if not (compiled and keeps_graph(method, passes)):
        yield
        return
    with torch._functorch.config.patch(enable_autograd_cache=False):
        yield
