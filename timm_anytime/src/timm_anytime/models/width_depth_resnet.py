"""Width-depth-nested Sparse ResNets (SPEC section 5): interlaced depth levels of width-nested units.

The body is the interlaced Sparse body of the depth-nested family (``layers.sparse_body``) built
from width-nested units and transitions (``layers.sparse_blocks``, on ``layers.nested``): every
unit, transition and final BatchNorm is split into the power-of-two
stripes of the width nesting. A schedule such as ``"w1d1,w2d1,w2d2,w4d2,w4d4"`` lists each stage's
width and depth; stage s runs the units of depth level <= d_s at the stripes <= w_s. A cell (unit,
stripe) reads only units its depth level allows and only input stripes <= its own, so it reads only
cells of its own or earlier stages, and the nesting invariant holds. Each stage has its own head: its
depth level's final BN-ReLU, pooled over its stripes, and a Linear layer.
"""

from collections.abc import Generator, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import torch
from timm.models import register_model
from torch import Tensor, nn
from torch.nn import functional as F

from ..layers.nested import NestedBatchNorm2d, NestedConv2d, dense_state, grow, prefix_of
from ..layers.sparse_blocks import InterlacedStage, LevelTransitions, NestedSparseUnit, NestedTransition
from ..layers.sparse_body import InterlacedBodyMixin, interlaced_key
from ..sparse import unit_levels
from ..stripes import StripeSpec
from ..width_depth import WidthDepthSchedule
from .anytime import AnytimeMixin, assign_stage, keep_rows
from .cfgs import cifar_cfg
from .depth_resnet import depth_level_network
from .heads import NormedHeadsMixin
from .intermediates import FeatureIntermediatesMixin
from .pretrained import anytime_default_cfgs, build_anytime_model, hook_feature_cfg
from .widths import scaled_widths

if TYPE_CHECKING:
    from .depth_resnet import DepthNestedSparseResNet
    from .sparse_resnet import SparseResNet


class WidthDepthNestedSparseResNet(
    FeatureIntermediatesMixin, InterlacedBodyMixin, NormedHeadsMixin, AnytimeMixin, nn.Module
):
    """A CIFAR Sparse ResNet nested in width and depth along ``schedule`` (SPEC section 5).

    Args:
        units_per_stage: Units in every resolution stage of the full network (N, a multiple of
            2^(depth levels - 1)).
        schedule: Each stage's width and depth factors, e.g. ``"w1d1,w2d1,w2d2,w4d2,w4d4"``.
            Width level j is stripe j of the power-of-two nesting (w1: 1/4 of the full width
            when the last stage is w4); depth level l holds N / 2^(L - l) units per stage.
        channels: Width of each resolution stage of the full network, before ``width``.
        width: Multiplier on every layer's width.
    """

    depth_of_stage: list[int]
    head_levels: list[int]
    if TYPE_CHECKING:  # submodules: declared for the type checker alone (TorchScript would read a
        # class annotation of a submodule as its type)
        conv1: NestedConv2d
        stage1: InterlacedStage
        stage2: InterlacedStage
        stage3: InterlacedStage
    separate_stage_passes = True  # D_S's training forward also updates every head level's statistics
    #: ``forward_anytime`` computes a layer's new stripes in one call (faster; a new depth level's
    #: units then also multiply their structural zeros). False: one stripe per call, exactly the
    #: nested multiply-adds (what ``timm_anytime.cost`` counts). The outputs are the same.
    fuse_stripes: bool = True
    pool_types = ("avg", "max", "avgmax", "")  # per channel, so a stage's head reads a prefix

    def __init__(
        self,
        units_per_stage: int = 16,
        schedule: str | WidthDepthSchedule = "w1d1,w2d1,w2d2,w4d2,w4d4",
        channels: tuple = (16, 32, 64),
        num_classes: int = 10,
        in_chans: int = 3,
        width: float = 1.0,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if not isinstance(schedule, WidthDepthSchedule):
            schedule = WidthDepthSchedule.parse(schedule)
        levels = schedule.depth_levels
        unit_levels(units_per_stage, levels)  # validates the interlacing
        spec = StripeSpec.parse("w" + "".join(str(2**i) for i in range(schedule.width_levels)))
        widths = scaled_widths(channels, width)
        for c in widths:
            spec.splits(c)  # every layer must split into the stripes
        dd = {"device": device, "dtype": dtype}
        nd = {"spec": spec, **dd}
        self.num_classes, self.in_chans, self.drop_rate = num_classes, in_chans, drop_rate
        self.units_per_stage, self.schedule, self.channels, self.width = units_per_stage, schedule, channels, width
        self.spec, self.levels, self.widths = spec, levels, widths
        self.depth_of_stage = [schedule.depth(s) for s in range(1, schedule.num_stages + 1)]  # (TorchScript)
        self.head_levels = sorted(set(self.depth_of_stage))
        self.num_stages = self.stage = schedule.num_stages
        self._build_body(
            widths=widths,
            in_chans=in_chans,
            stem="cifar",
            stem_conv=partial(NestedConv2d, striped_input=False, spec=spec),
            make_stage=lambda c: InterlacedStage(
                c, units_per_stage, levels, make_unit=lambda: NestedSparseUnit(c, **nd)
            ),
            make_transition=lambda c_in, c: LevelTransitions(
                c_in, c, levels, make_transition=lambda: NestedTransition(c_in, c, **nd)
            ),
            feature_module="stage{}.out",
            dd=dd,
        )
        self.feature_splits = spec.splits(widths[-1])
        norms = nn.ModuleList(NestedBatchNorm2d(widths[-1], **nd) for _ in range(levels))
        self._build_head("norms", norms, widths[-1], global_pool, num_classes, dd)
        self.set_active_stage(self.num_stages)

    def _make_heads(self, num_classes: int, dd: dict[str, Any]) -> nn.ModuleList:
        if num_classes <= 0:
            return nn.ModuleList(nn.Identity() for _ in range(self.num_stages))
        return nn.ModuleList(
            nn.Linear(self.feature_splits[self.schedule.width(s)], num_classes, **dd)
            for s in range(1, self.num_stages + 1)
        )

    # ------------------------------------------------------------------ anytime bookkeeping
    @torch.jit.ignore
    def heads(self) -> nn.ModuleList:
        """Stage k's own classifier (its final BatchNorm is shared by the stages of one depth
        level, stripe by stripe; ``element_stages`` assigns it)."""
        return self.fc

    @torch.jit.ignore
    def set_active_stage(self, stage: int) -> nn.Module:
        """Make ``model(x)`` run D_stage alone: its depth levels, every layer at its width."""
        self.stage = self.check_stage(stage)
        self._set_width(self.schedule.width(stage))
        return self

    def _set_width(self, width_level: int) -> None:
        for module in self.modules():
            if isinstance(module, (NestedConv2d, NestedBatchNorm2d)):
                assign_stage(module, width_level)

    def _depth_modules(self) -> Iterator[tuple[int, nn.Module, bool]]:
        """(depth level, module, is a head norm) for every module holding body parameters."""
        for level, module in self._level_modules():
            yield level, module, False
        for level, norm in enumerate(self.norms, start=1):
            yield level, norm, True

    @torch.jit.ignore
    def element_stages(self) -> dict[nn.Parameter, Tensor]:
        """Each element's stage: the first stage whose width and depth cover its (level, stripe)
        cell; structural zeros, and final-BN stripes no stage reads, get 0."""
        owners: dict[nn.Parameter, Tensor] = {}
        for level, module, head_norm in self._depth_modules():
            rule = self.schedule.head_norm_owner if head_norm else self.schedule.body_owner
            table = torch.tensor([0] + [rule(level, j) for j in range(1, self.spec.num_stages + 1)])
            for layer in module.modules():
                if isinstance(layer, (NestedConv2d, NestedBatchNorm2d)):
                    for name, stripe in layer.stage_of_elements().items():
                        param = getattr(layer, name)
                        owners[param] = table[stripe].to(param.device)
        return owners

    # ------------------------------------------------------------------ timm model API

    def forward_features(self, x: Tensor) -> Tensor:
        """D_stage's final features (its depth level's BN-ReLU, its stripes only)."""
        depth = self.depth_of_stage[self.stage - 1]
        outputs = self._level_outputs(x, depth)
        if self.training and self.stage == self.num_stages:
            # As in forward_stages, every head level's final BatchNorm sees this batch, so that the
            # training pass of D_S alone leaves the statistics the single pass leaves.
            for level in self.head_levels:
                if level != depth:
                    self._head_norm(outputs[level - 1], level - 1)
        return self._head_norm(outputs[depth - 1], depth - 1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of the active stage (default: the last), from D_stage alone."""
        return self.forward_head(self.forward_features(x))

    # ------------------------------------------------------------------ anytime API
    def _stage_logits(self, pooled: Tensor, stage: int) -> Tensor:
        pooled = pooled[:, : self.feature_splits[self.schedule.width(stage)]]
        if self.drop_rate > 0.0:
            pooled = F.dropout(pooled, p=self.drop_rate, training=self.training)
        return self.fc[stage - 1](pooled)

    @torch.jit.ignore
    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """All stages' logits from one pass of the full network (for training): every depth
        level at full width; stage s's head reads the prefix of its stripes."""
        self._check_pooled("forward_stages")
        active = self.stage
        self._set_width(self.spec.num_stages)
        try:
            outputs = self._level_outputs(x, self.levels)
            pooled = {}
            for level in self.head_levels:
                pooled[level] = self.global_pool(self._head_norm(outputs[level - 1], level - 1))
        finally:
            self.set_active_stage(active)
        return [self._stage_logits(pooled[self.schedule.depth(s)], s) for s in range(1, self.num_stages + 1)]

    @torch.jit.ignore
    def forward_anytime(self, x: Tensor) -> Generator[Tensor, Tensor | None, None]:
        """Yield stage 1, 2, ... logits; stage k computes only the (unit, stripe) cells, transition
        stripes and head stripes that D_k adds to D_(k-1)."""
        self._check_pooled("forward_anytime")
        run = _AnytimeRun(self, x)
        for s in range(1, self.num_stages + 1):
            rows = yield run.advance(s)
            if rows is not None:  # continue with these inputs only (see AnytimeMixin)
                run.keep(rows)

    @torch.jit.ignore
    def extract_stage(self, stage: int) -> nn.Module:
        """D_stage as a standalone network with dense weights (the structural zeros copied):
        a plain :class:`SparseResNet` when its depth is d1, else a depth-nested Sparse ResNet
        whose last stage is D_stage. Shares no tensors with this model."""
        return extract_width_depth_stage(self, self.check_stage(stage))

    @torch.jit.ignore
    def head_flops(self, stage: int, x: Tensor) -> int:
        """FLOPs of stage ``stage``'s classifier on one pooled feature vector."""
        from torch.utils.flop_counter import FlopCounterMode

        pooled = x.new_zeros(1, self.num_features)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            self._stage_logits(pooled, self.check_stage(stage))
        return counter.get_total_flops()


Cell = tuple[str | int, ...]  # a cell of _AnytimeRun: its kind ("stem", "in", "u", "out", "pooled"), indices


class _AnytimeRun:
    """The incremental state of one ``forward_anytime`` pass.

    Every cell (the stem, a level's stage input or output at a resolution, a unit, a head's pooled
    features) keeps the channels computed so far as one prefix (``layers.nested.grow``). Stage k
    extends each cell of D_k from the stripes it has to D_k's width. With ``model.fuse_stripes``
    (the default) that is one call per layer: for a unit D_(k-1) already had, its new stripes; for
    a unit of a new depth level, all its stripes at once, whose convolutions then multiply the
    block-triangular zeros as well (up to 16/11 of that unit's nested multiply-adds for stripes of
    1/4, 1/4, 1/2, but one call instead of one per stripe: on a CPU the calls, not the
    multiply-adds, set the time of these narrow layers; ``docs/models.md``, "Width-depth
    nesting"). Without it, one stripe at a time: exactly the nested multiply-adds.
    """

    def __init__(self, model: WidthDepthNestedSparseResNet, x: Tensor) -> None:
        self.model, self.x = model, x
        self.splits = [model.spec.splits(c) for c in model.widths]  # per resolution: stripe -> channels
        self.cells: dict[Cell, tuple[Tensor, int]] = {}  # key -> (buffer, channels filled)
        self.stripes: dict[Cell, int] = {}  # key -> stripes computed
        self.caches: dict[Cell, dict[str, tuple[Tensor, int]]] = {}  # a layer's inner activations

    def keep(self, rows: Tensor) -> None:
        """Drop every input but ``rows`` from the state."""
        for name in ("x", "cells", "caches"):
            setattr(self, name, keep_rows(getattr(self, name), rows))

    def _first_missing(self, key: Cell, width: int) -> int:
        """The first stripe of cell ``key`` still to compute for ``width`` stripes (0: none)."""
        lo = self.stripes.get(key, 0) + 1
        return lo if lo <= width else 0

    def _store(self, key: Cell, new: Tensor, channels: int, width: int) -> None:
        grow(self.cells, key, new, channels)
        self.stripes[key] = width

    def _read(self, key: Cell, resolution: int, lo: int, hi: int) -> Tensor:
        """Stripes lo..hi of cell ``key`` at ``resolution`` (a view of its prefix)."""
        c = self.splits[resolution]
        return self.cells[key][0][:, c[lo - 1] : c[hi]]

    def _sum(self, keys: list[Cell], resolution: int, lo: int, hi: int) -> Tensor:
        total = self._read(keys[0], resolution, lo, hi)
        for key in keys[1:]:
            total = total + self._read(key, resolution, lo, hi)
        return total

    def advance(self, stage: int) -> Tensor:
        """Extend every cell of D_stage to its width; return stage ``stage``'s logits."""
        model, width = self.model, self.model.schedule.width(stage)
        depth = model.schedule.depth(stage)
        for w in [width] if model.fuse_stripes else range(1, width + 1):
            self._extend(w, depth)
        pooled, filled = self.cells[("pooled", depth)]
        return model._stage_logits(pooled[:, :filled], stage)

    def _extend(self, width: int, depth: int) -> None:
        """Compute every cell of depth level <= ``depth`` up to ``width`` stripes."""
        model = self.model
        key: Cell
        lo = self._first_missing(("stem",), width)
        if lo:
            self._store(("stem",), model.conv1.forward_stripes(self.x, lo, width), model.widths[0], width)
        last = model.num_resolution_stages - 1
        for r in range(model.num_resolution_stages):
            block, channels = getattr(model, f"stage{r + 1}"), model.widths[r]
            inputs: dict[int, Cell] = {
                level: ("stem",) if r == 0 else ("in", r, level) for level in range(1, depth + 1)
            }
            for level in range(1, depth + 1) if r > 0 else ():
                lo = self._first_missing(inputs[level], width)
                if lo:
                    transition = getattr(model, f"transition{r}").levels[level - 1]
                    cache = self.caches.setdefault(inputs[level], {})
                    previous = self._read(("out", r - 1, level), r - 1, lo, width)
                    self._store(inputs[level], transition.forward_stripes(previous, lo, width, cache), channels, width)
            for index, unit in enumerate(block.units):
                level, key = block.level_of[index], ("u", r, index)
                lo = self._first_missing(key, width) if level <= depth else 0
                if lo:
                    reads: list[Cell] = [("u", r, u) for u in block.reads[index]]
                    if block.reads_input[index]:
                        reads.append(inputs[level])
                    cache = self.caches.setdefault(key, {})
                    new = unit.forward_stripes(self._sum(reads, r, lo, width), lo, width, cache)
                    self._store(key, new, channels, width)
            for level in range(1, depth + 1):
                key = ("out", r, level)
                lo = self._first_missing(key, width) if r < last or level == depth else 0  # only the stage's
                if lo:  # own depth level reaches a head
                    reads = [("u", r, u) for u in block.out_reads[level - 1]]
                    if block.out_reads_input[level - 1]:
                        reads.append(inputs[level])
                    self._store(key, self._sum(reads, r, lo, width), channels, width)
        key = ("pooled", depth)
        lo = self._first_missing(key, width)
        if lo:
            out = self._read(("out", last, depth), last, lo, width)
            norm = cast(NestedBatchNorm2d, model.norms[depth - 1])
            features = model.act(norm.forward_stripes(out, lo, width))
            self._store(key, model.global_pool(features), model.widths[-1], width)


# ---------------------------------------------------------------------- extraction
def extract_width_depth_stage(
    model: WidthDepthNestedSparseResNet, stage: int
) -> "SparseResNet | DepthNestedSparseResNet":
    """D_stage of a width-depth-nested Sparse ResNet as a standalone network with dense weights.

    D_stage = (width w, depth d) is the d-level depth-nested network on N / 2^(L - d) units, at the
    prefix width of stripes <= w, with the block-triangular zeros copied into dense weights (for
    d = 1 a plain ``SparseResNet``). Its last stage is D_stage. Its head for an earlier depth level
    l comes from this model's stage (w, l) where the schedule has one, else it stays untrained.
    """
    schedule, spec = model.schedule, model.spec
    width, depth = schedule.width(stage), schedule.depth(stage)
    channels = tuple(spec.splits(c)[width] for c in model.widths)
    plain = depth_level_network(model, depth, channels=channels, stem="cifar")
    shapes = {key: value.shape for key, value in plain.state_dict().items()}
    heads = {schedule.depth(t): t for t in range(1, stage + 1) if schedule.width(t) == width}  # level -> stage
    mapped: dict[str, Tensor] = {}
    for key, value in dense_state(model).items():
        parts = key.split(".")
        if parts[0] == "fc":
            stage_of_head = int(parts[1]) + 1
            level = schedule.depth(stage_of_head)
            if heads.get(level) != stage_of_head:
                continue
            key = ".".join(["fc", str(level - 1), *parts[2:]])
        target = interlaced_key(model, key, depth)
        if target is not None:
            mapped[target] = prefix_of(value, shapes[target]).clone()
    missing, unexpected = plain.load_state_dict(mapped, strict=False)
    if unexpected or not all(k.startswith("fc.") for k in missing):
        raise RuntimeError(f"extract_stage({stage}) could not map the weights: {missing=} {unexpected=}")
    plain.pretrained_cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    return plain.train(model.training)


# ---------------------------------------------------------------------- registry
#: name -> (units per resolution stage, schedule); ``schedule=`` builds any other nesting
WIDTH_DEPTH_MODELS: dict[str, tuple[int, str]] = {
    "anytime_cifar_sparse_resnet50_wd_alt": (8, "w1d1,w2d1,w2d2,w4d2,w4d4"),
    "anytime_cifar_sparse_resnet50_wd_sim": (8, "w1d1,w2d2,w4d4"),
    "anytime_cifar_sparse_resnet98_wd_alt": (16, "w1d1,w2d1,w2d2,w4d2,w4d4"),
    "anytime_cifar_sparse_resnet98_wd_sim": (16, "w1d1,w2d2,w4d4"),
}

default_cfgs = anytime_default_cfgs(
    {
        name: cifar_cfg(classifier=tuple(f"fc.{i}" for i in range(len(schedule.split(",")))))
        for name, (_, schedule) in WIDTH_DEPTH_MODELS.items()
    }
)


def _create(variant: str, pretrained: bool, **kwargs: Any) -> WidthDepthNestedSparseResNet:
    units, schedule = WIDTH_DEPTH_MODELS[variant]
    args: dict[str, Any] = dict(units_per_stage=units, schedule=schedule, channels=(16, 32, 64), num_classes=10)
    return build_anytime_model(
        WidthDepthNestedSparseResNet, variant, pretrained, feature_cfg=hook_feature_cfg(3), **{**args, **kwargs}
    )


@register_model
def anytime_cifar_sparse_resnet50_wd_alt(pretrained: bool = False, **kwargs: Any) -> WidthDepthNestedSparseResNet:
    """Width-depth-nested CIFAR Sparse ResNet-50, alternating schedule w1d1, w2d1, w2d2, w4d2, w4d4."""
    return _create("anytime_cifar_sparse_resnet50_wd_alt", pretrained, **kwargs)


@register_model
def anytime_cifar_sparse_resnet50_wd_sim(pretrained: bool = False, **kwargs: Any) -> WidthDepthNestedSparseResNet:
    """Width-depth-nested CIFAR Sparse ResNet-50, simultaneous schedule w1d1, w2d2, w4d4."""
    return _create("anytime_cifar_sparse_resnet50_wd_sim", pretrained, **kwargs)


@register_model
def anytime_cifar_sparse_resnet98_wd_alt(pretrained: bool = False, **kwargs: Any) -> WidthDepthNestedSparseResNet:
    """The paper's width-depth-nested Sparse ResNet-98, alternating: w1d1, w2d1, w2d2, w4d2, w4d4."""
    return _create("anytime_cifar_sparse_resnet98_wd_alt", pretrained, **kwargs)


@register_model
def anytime_cifar_sparse_resnet98_wd_sim(pretrained: bool = False, **kwargs: Any) -> WidthDepthNestedSparseResNet:
    """The paper's width-depth-nested Sparse ResNet-98, simultaneous: w1d1, w2d2, w4d4."""
    return _create("anytime_cifar_sparse_resnet98_wd_sim", pretrained, **kwargs)
