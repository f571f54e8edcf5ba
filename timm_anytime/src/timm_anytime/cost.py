"""Per-stage cost of an anytime network: FLOPs counted by ``torch.utils.flop_counter``, parameters."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .models.anytime import is_anytime_model


@dataclass(frozen=True)
class StageCost:
    """Cost of one stage, for one input image.

    Attributes:
        stage: 1-based stage index.
        params: d_k, the parameters subnetwork D_k uses (its nested elements and its own head).
        flops: FLOPs of D_k alone, as ``forward_anytime`` computes it one stripe at a time (the
            nested cost: later stripes, structural zeros and earlier heads excluded).
        anytime_flops: Cumulative FLOPs of ``forward_anytime`` through stage k (all earlier heads
            included): what stopping after stage k has cost. Counted with ``fuse_stripes`` off
            where a model has it: its default, fused path computes the same outputs with more
            multiply-adds, all of them by structural zeros.
        active_flops: FLOPs that ``set_active_stage(k); model(x)`` executes. Each layer runs as one
            dense kernel over the prefix channels, so the block-triangular zeros are counted too.
    """

    stage: int
    params: int
    flops: int
    anytime_flops: int
    active_flops: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _head_flops(model: Any, stage: int, like: torch.Tensor) -> int:
    """FLOPs of head ``stage`` alone, on one pooled feature vector (or the model's own count).
    ``model`` is an anytime model read through its family's own members (``head_flops``,
    ``heads()``, ``feature_splits``), hence ``Any``."""
    if hasattr(model, "head_flops"):
        return int(model.head_flops(stage, like))
    head = model.heads()[stage - 1]
    pooled = like.new_zeros(1, model.feature_splits[stage])
    with FlopCounterMode(display=False) as counter:
        head(pooled)
    return counter.get_total_flops()


@torch.no_grad()
def stage_costs(model: nn.Module, input_size: tuple[int, ...] | None = None) -> list[StageCost]:
    """FLOPs and parameters of every stage of an anytime ``model`` for one image of ``input_size``
    (default: the model's ``pretrained_cfg['input_size']``)."""
    if not is_anytime_model(model):
        raise TypeError(
            f"stage_costs needs an anytime model (the AnytimeModel members); {type(model).__name__} is not one: "
            "model_costs counts any other network as one stage"
        )
    if input_size is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        if "input_size" not in cfg:
            raise ValueError(
                f"{type(model).__name__} has no pretrained_cfg['input_size']: pass input_size, e.g. (3, 32, 32)"
            )
        input_size = tuple(cfg["input_size"])
    weight = next(model.parameters())
    x = torch.randn(1, *input_size, device=weight.device, dtype=weight.dtype)
    was_training = model.training
    active: int = model.active_stage  # type: ignore[assignment]  # AnytimeMixin's, not in the protocol
    fused = getattr(model, "fuse_stripes", None)
    model.eval()
    try:
        if fused is not None:  # count the nested multiply-adds (see StageCost.anytime_flops)
            model.fuse_stripes = False  # type: ignore[assignment]  # a plain flag, not Tensor | Module
        anytime = []
        with FlopCounterMode(display=False) as counter:
            for _ in model.forward_anytime(x):
                anytime.append(counter.get_total_flops())
        heads = [_head_flops(model, k, x) for k in range(1, model.num_stages + 1)]
        active_flops = []
        for k in range(1, model.num_stages + 1):
            model.set_active_stage(k)
            with FlopCounterMode(display=False) as counter:
                model(x)
            active_flops.append(counter.get_total_flops())
    finally:
        if fused is not None:
            model.fuse_stripes = fused
        model.set_active_stage(active)
        model.train(was_training)
    sizes: list[int] = model.subnetwork_sizes()  # type: ignore[operator]  # AnytimeMixin's, not in the protocol
    costs = []
    for k in range(1, model.num_stages + 1):
        flops = anytime[k - 1] - sum(heads[: k - 1])  # earlier heads are not part of D_k
        costs.append(StageCost(k, sizes[k - 1], flops, anytime[k - 1], active_flops[k - 1]))
    return costs


def format_costs(costs: list[StageCost]) -> str:
    """A printable table of :func:`stage_costs`."""
    lines = [f"{'stage':>5} {'params (M)':>11} {'GFLOPs D_k':>11} {'GFLOPs anytime':>15} {'GFLOPs active':>14}"]
    for c in costs:
        lines.append(
            f"{c.stage:>5} {c.params / 1e6:>11.3f} {c.flops / 1e9:>11.4f} {c.anytime_flops / 1e9:>15.4f} "
            f"{c.active_flops / 1e9:>14.4f}"
        )
    return "\n".join(lines)


@torch.no_grad()
def model_costs(model: nn.Module, input_size: tuple[int, ...]) -> list[StageCost]:
    """:func:`stage_costs` for an anytime model; one stage (the whole network) for any other."""
    if is_anytime_model(model):
        return stage_costs(model, input_size)
    weight = next(model.parameters())
    x = torch.randn(1, *input_size, device=weight.device, dtype=weight.dtype)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    flops = counter.get_total_flops()
    return [StageCost(1, sum(p.numel() for p in model.parameters()), flops, flops, flops)]
