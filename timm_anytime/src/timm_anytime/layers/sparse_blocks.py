"""The blocks every Sparse ResNet family is made of (SPEC section 4): units, resolution stages and
transitions, plain and width-nested.

* :class:`SparseUnit` / :class:`NestedSparseUnit`: pre-activation BN-ReLU-conv3x3-BN-ReLU-conv3x3.
* :class:`Transition` / :class:`NestedTransition`: BN-ReLU-conv1x1 (widen)-avgpool2 between stages.
* :class:`SparseStage`: N units with sparse aggregation by summation (the plain and EANN bodies).
* :class:`InterlacedStage` and :class:`LevelTransitions`: a stage whose units are interlaced into
  depth levels, and one transition per level (the depth- and width-depth-nested bodies; the unit
  and transition factories choose plain or width-nested layers).
"""

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..sparse import interlaced_wiring, sparse_inputs, stage_output_units
from ..stripes import StripeSpec
from .checkpointing import checkpointed
from .nested import NestedBatchNorm2d, NestedConv2d, grow


class SparseUnit(nn.Module):
    """Pre-activation basic unit: BN-ReLU-conv3x3-BN-ReLU-conv3x3 (``norm_layer`` and
    ``conv_layer`` choose the layer classes, as in timm's blocks)."""

    def __init__(
        self,
        channels: int,
        device=None,
        dtype=None,
        norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
        conv_layer: Callable[..., nn.Module] = nn.Conv2d,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.bn1 = norm_layer(channels, **dd)
        self.act1 = nn.ReLU()
        self.conv1 = conv_layer(channels, channels, 3, 1, 1, bias=False, **dd)
        self.bn2 = norm_layer(channels, **dd)
        self.act2 = nn.ReLU()
        self.conv2 = conv_layer(channels, channels, 3, 1, 1, bias=False, **dd)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.act2(self.bn2(self.conv1(self.act1(self.bn1(x))))))


class NestedSparseUnit(SparseUnit):
    """:class:`SparseUnit` over width-nested layers (same parameter names)."""

    if TYPE_CHECKING:  # the layers SparseUnit built: declared for the type checker alone
        # (TorchScript would read a class annotation of a submodule as its type)
        bn1: NestedBatchNorm2d
        conv1: NestedConv2d
        bn2: NestedBatchNorm2d
        conv2: NestedConv2d

    def __init__(self, channels: int, *, spec: StripeSpec, device=None, dtype=None) -> None:
        super().__init__(
            channels,
            device,
            dtype,
            norm_layer=partial(NestedBatchNorm2d, spec=spec),
            conv_layer=partial(NestedConv2d, spec=spec),
        )

    def forward_stripes(self, x: Tensor, lo: int, hi: int, cache: dict[str, tuple[Tensor, int]]) -> Tensor:
        """Output stripes lo..hi from input stripes lo..hi alone (BN and ReLU are per channel);
        the earlier stripes' activations come from ``cache``, which this extends."""
        h = grow(cache, "h0", self.act1(self.bn1.forward_stripes(x, lo, hi)), self.bn1.num_features)
        h = self.act2(self.bn2.forward_stripes(self.conv1.forward_stripes(h, lo, hi), lo, hi))
        return self.conv2.forward_stripes(grow(cache, "h1", h, self.conv1.out_channels), lo, hi)


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1 (widen)-avgpool2 between two resolution stages."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        device=None,
        dtype=None,
        norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
        conv_layer: Callable[..., nn.Module] = nn.Conv2d,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.add_module("norm", norm_layer(in_channels, **dd))
        self.add_module("act", nn.ReLU())
        self.add_module("conv", conv_layer(in_channels, out_channels, 1, bias=False, **dd))
        self.add_module("pool", nn.AvgPool2d(2))


class NestedTransition(Transition):
    """:class:`Transition` over width-nested layers (same parameter names)."""

    if TYPE_CHECKING:  # the layers Transition added by name: declared for the type checker alone
        norm: NestedBatchNorm2d
        act: nn.Module
        conv: NestedConv2d
        pool: nn.Module

    def __init__(self, in_channels: int, out_channels: int, *, spec: StripeSpec, device=None, dtype=None) -> None:
        super().__init__(
            in_channels,
            out_channels,
            device,
            dtype,
            norm_layer=partial(NestedBatchNorm2d, spec=spec),
            conv_layer=partial(NestedConv2d, spec=spec),
        )

    def forward_stripes(self, x: Tensor, lo: int, hi: int, cache: dict[str, tuple[Tensor, int]]) -> Tensor:
        """Output stripes lo..hi from input stripes lo..hi alone; earlier stripes come from ``cache``."""
        h = grow(cache, "h0", self.act(self.norm.forward_stripes(x, lo, hi)), self.norm.num_features)
        return self.pool(self.conv.forward_stripes(h, lo, hi))


class SparseStage(nn.Module):
    """N units with sparse aggregation by summation; returns the aggregate at position N + 1."""

    inputs: list[list[int]]

    def __init__(self, channels: int, num_units: int, device=None, dtype=None) -> None:
        super().__init__()
        self.units = nn.ModuleList(SparseUnit(channels, device=device, dtype=dtype) for _ in range(num_units))
        self.inputs = [sparse_inputs(position) for position in range(1, num_units + 2)]
        self.grad_checkpointing = False

    def _aggregate(self, outputs: list[Tensor], index: int) -> Tensor:
        """The sum of ``outputs`` at the positions that feed position ``index + 1``."""
        positions = self.inputs[index]
        total = outputs[positions[0]]
        for position in positions[1:]:
            total = total + outputs[position]
        return total

    def forward_until(self, x: Tensor, units: int) -> Tensor:
        """Run units 1..``units`` and return the aggregate at position ``units + 1`` (for
        ``units = N``: the stage output). A cascade exit after unit ``units`` reads this."""
        outputs = [x]
        for index, unit in enumerate(self.units):
            if index < units:
                aggregate = self._aggregate(outputs, index)
                if self.grad_checkpointing and not torch.jit.is_scripting():
                    outputs.append(checkpointed(unit, aggregate))
                else:
                    outputs.append(unit(aggregate))
        return self._aggregate(outputs, units)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_until(x, len(self.units))


class InterlacedStage(nn.Module):
    """One resolution stage: N units interlaced into depth levels, each unit reading inside its own
    level's sequence (``sparse.interlaced_wiring``).

    ``forward(inputs)`` takes the stage input of each level 1..k (k: the deepest active level) and
    returns each level's stage output; units of levels > k are not run. ``make_unit()`` builds one
    unit (default: a plain :class:`SparseUnit`).
    """

    level_of: list[int]
    reads: list[list[int]]
    reads_input: list[bool]
    out_reads: list[list[int]]
    out_reads_input: list[bool]

    def __init__(
        self,
        channels: int,
        num_units: int,
        levels: int,
        device=None,
        dtype=None,
        make_unit: Callable[[], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if make_unit is None:
            make_unit = lambda: SparseUnit(channels, device=device, dtype=dtype)  # noqa: E731
        self.units = nn.ModuleList(make_unit() for _ in range(num_units))
        self.grad_checkpointing = False
        self.out = nn.Identity()  # the deepest active level's output passes here (timm's feature hooks)
        wiring = interlaced_wiring(num_units, levels)
        self.level_of = [w.level for w in wiring]
        self.reads = [[u - 1 for u in w.reads_units] for w in wiring]
        self.reads_input = [w.reads_stage_input for w in wiring]
        self.out_reads, self.out_reads_input = [], []
        for level in range(1, levels + 1):
            units, with_input = stage_output_units(num_units, levels, level)
            self.out_reads.append([u - 1 for u in units])
            self.out_reads_input.append(with_input)

    def _aggregate(self, outputs: list[Tensor], stage_input: Tensor, reads: list[int], with_input: bool) -> Tensor:
        # `outputs` is indexed by unit: a list in forward (TorchScript takes no Sequence | Mapping
        # annotation, so the signature says list), a dict in forward_level (not scripted).
        total = stage_input
        first = not with_input
        for unit in reads:
            if first:
                total = outputs[unit]
                first = False
            else:
                total = total + outputs[unit]
        return total

    def forward(self, inputs: list[Tensor]) -> list[Tensor]:
        active = len(inputs)
        outputs: list[Tensor] = []
        for index, unit in enumerate(self.units):
            level = self.level_of[index]
            if level <= active:
                aggregate = self._aggregate(outputs, inputs[level - 1], self.reads[index], self.reads_input[index])
                if self.grad_checkpointing and not torch.jit.is_scripting():
                    outputs.append(checkpointed(unit, aggregate))
                else:
                    outputs.append(unit(aggregate))
            else:
                outputs.append(inputs[0])  # a placeholder: no unit of an active level reads it
        results: list[Tensor] = []
        for level in range(active):
            result = self._aggregate(outputs, inputs[level], self.out_reads[level], self.out_reads_input[level])
            results.append(self.out(result) if level == active - 1 else result)
        return results

    @torch.jit.ignore
    def forward_level(self, stage_input: Tensor, level: int, outputs: dict[int, Tensor]) -> Tensor:
        """Run only the units of ``level`` (reading ``outputs`` of lower levels, which it extends)
        and return ``level``'s stage output."""
        # `outputs` is a dict here: _aggregate's annotation says list for TorchScript (see there).
        for index, unit in enumerate(self.units):
            if self.level_of[index] == level:
                aggregate = self._aggregate(outputs, stage_input, self.reads[index], self.reads_input[index])  # type: ignore[arg-type]
                outputs[index] = unit(aggregate)
        return self.out(
            self._aggregate(outputs, stage_input, self.out_reads[level - 1], self.out_reads_input[level - 1])  # type: ignore[arg-type]
        )


class LevelTransitions(nn.Module):
    """One transition per depth level between two resolution stages (each level has its own);
    ``make_transition()`` builds one (default: a plain :class:`Transition`)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        levels: int,
        device=None,
        dtype=None,
        make_transition: Callable[[], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if make_transition is None:
            make_transition = lambda: Transition(in_channels, out_channels, device=device, dtype=dtype)  # noqa: E731
        self.levels = nn.ModuleList(make_transition() for _ in range(levels))

    def forward(self, outputs: list[Tensor]) -> list[Tensor]:
        inputs: list[Tensor] = []
        for level, transition in enumerate(self.levels):
            if level < len(outputs):
                inputs.append(transition(outputs[level]))
        return inputs
