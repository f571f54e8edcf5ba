"""Depth-nested Sparse ResNets: the units of every resolution stage interlaced into levels (SPEC 4).

Subnetwork D_s holds the units of level <= s. A unit of level s aggregates (sparse rule, by
summation) inside the unit sequence of D_s, from the outputs of earlier units of levels <= s and
from level s's own stage input; so nothing of a higher level ever reaches D_s. Every level has its
own transitions between resolution stages and its own head (BN-ReLU-pool-Linear).

Because the interlacing is recursive, D_k of an L-level network is exactly the k-level network on
N / 2^(L-k) units per stage: ``extract_stage(k)`` returns that smaller network (for k = 1 a plain
:class:`SparseResNet`).
"""

from collections.abc import Callable, Iterator
from typing import Any

import torch
from timm.layers import SelectAdaptivePool2d
from timm.models import register_model
from torch import Tensor, nn

from ..sparse import interlaced_wiring, stage_output_units, unit_levels
from .anytime import AnytimeMixin, keep_rows
from .cfgs import cifar_cfg, imagenet_cfg
from .multi_head import NormedHeadsMixin
from .pretrained import anytime_default_cfgs, build_anytime_model
from .sparse_resnet import SparseResNet, SparseTimmMixin, SparseUnit, Transition


class InterlacedStage(nn.Module):
    """One resolution stage: N units, each reading inside its own level's sequence.

    ``forward(inputs)`` takes the stage input of each level 1..k (k: the active stage) and returns
    each level's stage output; units of levels > k are not run.
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
                    outputs.append(torch.utils.checkpoint.checkpoint(unit, aggregate, use_reentrant=False))
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
        for index, unit in enumerate(self.units):
            if self.level_of[index] == level:
                aggregate = self._aggregate(outputs, stage_input, self.reads[index], self.reads_input[index])
                outputs[index] = unit(aggregate)
        return self.out(
            self._aggregate(outputs, stage_input, self.out_reads[level - 1], self.out_reads_input[level - 1])
        )


class LevelTransitions(nn.Module):
    """One transition per level between two resolution stages (each level has its own)."""

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


class DepthNestedSparseResNet(SparseTimmMixin, NormedHeadsMixin, AnytimeMixin, nn.Module):
    """A Sparse ResNet with ``levels`` interlaced depth levels; stage s = D_s = levels <= s.

    Args:
        units_per_stage: Units in every resolution stage of the full network (N, a multiple of
            2^(levels - 1)).
        levels: Number of depth levels (anytime stages); D_s has N / 2^(levels - s) units per stage.
        channels: Width of each resolution stage, before ``width``.
        stem: ``"cifar"`` (3x3 conv) or ``"imagenet"`` (7x7 stride-2 conv, BN, ReLU, max-pool).
        width: Multiplier on every layer's width.
    """

    def __init__(
        self,
        units_per_stage: int = 16,
        levels: int = 4,
        channels: tuple = (16, 32, 64),
        stem: str = "cifar",
        num_classes: int = 10,
        in_chans: int = 3,
        width: float = 1.0,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"unknown stem {stem!r}: use 'cifar' or 'imagenet'")
        unit_levels(units_per_stage, levels)  # validates the interlacing
        dd = {"device": device, "dtype": dtype}
        widths = [round(c * width) for c in channels]
        if min(widths) < 1:
            raise ValueError(f"width={width} leaves a stage with no channels")
        self.num_classes, self.in_chans, self.drop_rate = num_classes, in_chans, drop_rate
        self.units_per_stage, self.levels, self.channels, self.stem_kind = units_per_stage, levels, channels, stem
        self.width = width
        self.num_stages = self.stage = levels
        self.grad_checkpointing = False
        self.num_resolution_stages = len(widths)
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, widths[0], 7, 2, 3, bias=False, **dd)
            self.bn1 = nn.BatchNorm2d(widths[0], **dd)
            self.act1 = nn.ReLU()
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            reduction, stem_module = 4, "maxpool"
        else:
            self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False, **dd)
            reduction, stem_module = 1, "conv1"
        self.feature_info = [dict(num_chs=widths[0], reduction=reduction, module=stem_module)]
        for index, channels_i in enumerate(widths):
            if index > 0:
                self.add_module(f"transition{index}", LevelTransitions(widths[index - 1], channels_i, levels, **dd))
                reduction *= 2
            self.add_module(f"stage{index + 1}", InterlacedStage(channels_i, units_per_stage, levels, **dd))
            self.feature_info.append(dict(num_chs=channels_i, reduction=reduction, module=f"stage{index + 1}.out"))
        self.norms = nn.ModuleList(nn.BatchNorm2d(widths[-1], **dd) for _ in range(levels))
        self.act = nn.ReLU()
        self.num_features = self.head_hidden_size = widths[-1]
        self.check_pool(global_pool)
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        self.fc = self._make_heads(num_classes, dd)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_heads(self, num_classes: int, dd: dict[str, Any]) -> nn.ModuleList:
        if num_classes <= 0:
            return nn.ModuleList(nn.Identity() for _ in range(self.levels))
        return nn.ModuleList(nn.Linear(self.num_features, num_classes, **dd) for _ in range(self.levels))

    # ------------------------------------------------------------------ anytime bookkeeping
    @torch.jit.ignore
    def element_stages(self) -> dict[nn.Parameter, Tensor]:
        """Whole tensors: the stem belongs to stage 1, a unit to its level, a transition to its level."""
        owners: dict[nn.Parameter, Tensor] = {}
        for param in self.conv1.parameters():
            owners[param] = torch.ones_like(param, dtype=torch.long)
        if hasattr(self, "bn1"):
            for param in self.bn1.parameters():
                owners[param] = torch.ones_like(param, dtype=torch.long)
        for r in range(self.num_resolution_stages):
            stage = getattr(self, f"stage{r + 1}")
            for unit, level in zip(stage.units, stage.level_of, strict=True):
                for param in unit.parameters():
                    owners[param] = torch.full_like(param, level, dtype=torch.long)
            if r > 0:
                for level, transition in enumerate(getattr(self, f"transition{r}").levels, start=1):
                    for param in transition.parameters():
                        owners[param] = torch.full_like(param, level, dtype=torch.long)
        return owners

    # ------------------------------------------------------------------ timm model API

    def _stem(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        if hasattr(self, "maxpool"):  # the ImageNet stem
            x = self.maxpool(self.act1(self.bn1(x)))
        return x

    def _level_outputs(self, x: Tensor, active: int) -> list[Tensor]:
        """Every level's (<= active) output of the last resolution stage, before its head's norm."""
        stem = self._stem(x)
        inputs: list[Tensor] = []
        for _ in range(active):
            inputs.append(stem)
        outputs = self.stage1(inputs)
        outputs = self.stage2(self.transition1(outputs))
        outputs = self.stage3(self.transition2(outputs))
        if hasattr(self, "stage4"):
            outputs = self.stage4(self.transition3(outputs))
        return outputs

    def forward_features(self, x: Tensor) -> Tensor:
        """D_stage's final features (after its head's BN-ReLU), computing only levels <= stage."""
        return self._head_norm(self._level_outputs(x, self.stage)[self.stage - 1], self.stage - 1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of the active stage (default: the last), from D_stage alone."""
        return self.forward_head(self.forward_features(x))

    # ------------------------------------------------------------------ anytime API
    def _head_input(self, x: Tensor, index: int) -> Tensor:
        return self._level_outputs(x, 1)[0]  # every level's final features have this shape

    @torch.jit.ignore
    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """All stages' logits from one pass of the full network (for training)."""
        if self.global_pool.is_identity():
            raise RuntimeError("forward_stages needs pooled heads; reset_classifier with global_pool='avg'")
        outputs = self._level_outputs(x, self.num_stages)
        return [self._logits(out, index) for index, out in enumerate(outputs)]

    @torch.jit.ignore
    def forward_anytime(self, x: Tensor) -> Iterator[Tensor]:
        """Yield stage 1, 2, ... logits; stage k runs only the units and transitions of level k.
        ``send(rows)`` after a stage continues with those inputs only."""
        if self.global_pool.is_identity():
            raise RuntimeError("forward_anytime needs pooled heads; reset_classifier with global_pool='avg'")
        stem = self._stem(x)
        caches: list[dict[int, Tensor]] = [{} for _ in range(self.num_resolution_stages)]
        for level in range(1, self.num_stages + 1):
            h = stem
            for r in range(self.num_resolution_stages):
                if r > 0:
                    h = getattr(self, f"transition{r}").levels[level - 1](h)
                h = getattr(self, f"stage{r + 1}").forward_level(h, level, caches[r])
            rows = yield self._logits(h, level - 1)
            if rows is not None:  # continue with these inputs only (see AnytimeMixin)
                stem, caches = keep_rows(stem, rows), keep_rows(caches, rows)

    @torch.jit.ignore
    def extract_stage(self, stage: int) -> nn.Module:
        """D_stage as a standalone network: the ``stage``-level depth-nested network on
        N / 2^(levels - stage) units per resolution stage (its last stage is D_stage), or, for
        stage 1, a plain :class:`SparseResNet`. Shares no tensors with this model."""
        return extract_depth_stage(self, self.check_stage(stage))


# ---------------------------------------------------------------------- extraction
def extract_depth_stage(model: nn.Module, stage: int) -> nn.Module:
    """D_stage of a depth-nested Sparse ResNet as a standalone network with copied weights.

    The interlacing is recursive: the units of levels <= k, renumbered in order, are exactly the
    k-level interlacing of N / 2^(L - k) units, with the same wiring. So D_k is the last stage of a
    k-level network of that size (for k = 1: a plain ``SparseResNet``, whose sparse rule is level
    1's wiring).
    """
    plain = depth_level_network(model, stage, channels=model.channels, stem=model.stem_kind, width=model.width)
    mapped: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        target = depth_level_key(model, key, stage)
        if target is not None:
            mapped[target] = value.clone()
    plain.load_state_dict(mapped, strict=True)
    plain.pretrained_cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    return plain.train(model.training)


def depth_level_network(model: nn.Module, depth: int, **args: Any) -> nn.Module:
    """The ``depth``-level depth-nested Sparse ResNet on N / 2^(levels - depth) units of ``model``
    (a plain ``SparseResNet`` for depth 1), with ``model``'s classes, input channels, pooling,
    dropout, device and dtype, and ``args`` (channels, stem, ...): what an extracted stage is built as."""
    weight = model.conv1.weight
    common = dict(
        units_per_stage=model.units_per_stage // 2 ** (model.levels - depth),
        num_classes=model.num_classes,
        in_chans=model.in_chans,
        global_pool=model.global_pool.pool_type,
        drop_rate=model.drop_rate,
        device=weight.device,
        dtype=weight.dtype,
    )
    return SparseResNet(**common, **args) if depth == 1 else DepthNestedSparseResNet(levels=depth, **common, **args)


def depth_level_key(model: nn.Module, key: str, depth: int) -> str | None:
    """Where ``key`` of a depth-nested model goes in its ``depth``-level extraction (None: not in it).
    Head keys (``fc``) map by depth level too, for a model with one head per level."""
    parts = key.split(".")
    if parts[0].startswith("stage") and parts[1] == "units":
        level_of = getattr(model, parts[0]).level_of
        index = int(parts[2])
        if level_of[index] > depth:
            return None
        parts[2] = str(sum(1 for lv in level_of[:index] if lv <= depth))  # its place in D_depth
    elif parts[0].startswith("transition"):  # transitionR.levels.<level - 1>.*
        if int(parts[2]) >= depth:
            return None
        if depth == 1:
            parts = [parts[0], *parts[3:]]
    elif parts[0] in ("norms", "fc") and parts[1].isdigit():
        if int(parts[1]) >= depth:
            return None
        if depth == 1:
            parts = ["norm" if parts[0] == "norms" else "fc", *parts[2:]]
    return ".".join(parts)


# ---------------------------------------------------------------------- registry
#: name -> (units per resolution stage, levels, layout); ``levels=`` builds any other depth
DEPTH_MODELS: dict[str, tuple[int, int, str]] = {
    "anytime_cifar_sparse_resnet26_d124": (4, 3, "cifar"),
    "anytime_cifar_sparse_resnet50_d124": (8, 3, "cifar"),
    "anytime_cifar_sparse_resnet98_d1248": (16, 4, "cifar"),
    "anytime_sparse_resnet66_d124": (8, 3, "imagenet"),
}


def _cfg(layout: str, levels: int) -> dict[str, Any]:
    heads = tuple(f"fc.{i}" for i in range(levels))
    return cifar_cfg(classifier=heads) if layout == "cifar" else imagenet_cfg(classifier=heads)


default_cfgs = anytime_default_cfgs({name: _cfg(layout, lv) for name, (_, lv, layout) in DEPTH_MODELS.items()})


def _create(variant: str, pretrained: bool, **kwargs: Any) -> DepthNestedSparseResNet:
    units, levels, layout = DEPTH_MODELS[variant]
    if layout == "cifar":
        args: dict[str, Any] = dict(units_per_stage=units, levels=levels, channels=(16, 32, 64), stem="cifar")
        args["num_classes"] = 10
    else:
        args = dict(units_per_stage=units, levels=levels, channels=(64, 128, 256, 512), stem="imagenet")
        args["num_classes"] = 1000
    resolution_stages = len(args["channels"])
    # Feature maps come from hooks: a stage's output exists only inside the level-wise forward.
    feature_cfg = dict(feature_cls="hook", no_rewrite=True, out_indices=tuple(range(resolution_stages + 1)))
    return build_anytime_model(
        DepthNestedSparseResNet, variant, pretrained, feature_cfg=feature_cfg, **{**args, **kwargs}
    )


@register_model
def anytime_cifar_sparse_resnet26_d124(pretrained: bool = False, **kwargs: Any) -> DepthNestedSparseResNet:
    """Depth-nested CIFAR Sparse ResNet-26: 4 units per stage in 3 levels (1, 2, 4 units)."""
    return _create("anytime_cifar_sparse_resnet26_d124", pretrained, **kwargs)


@register_model
def anytime_cifar_sparse_resnet50_d124(pretrained: bool = False, **kwargs: Any) -> DepthNestedSparseResNet:
    """Depth-nested CIFAR Sparse ResNet-50: 8 units per stage in 3 levels (2, 4, 8 units)."""
    return _create("anytime_cifar_sparse_resnet50_d124", pretrained, **kwargs)


@register_model
def anytime_cifar_sparse_resnet98_d1248(pretrained: bool = False, **kwargs: Any) -> DepthNestedSparseResNet:
    """The paper's depth-nested CIFAR Sparse ResNet-98: 16 units per stage in 4 levels (2, 4, 8, 16)."""
    return _create("anytime_cifar_sparse_resnet98_d1248", pretrained, **kwargs)


@register_model
def anytime_sparse_resnet66_d124(pretrained: bool = False, **kwargs: Any) -> DepthNestedSparseResNet:
    """The paper's depth-nested ImageNet Sparse ResNet-66: 8 units per stage in 3 levels (2, 4, 8)."""
    return _create("anytime_sparse_resnet66_d124", pretrained, **kwargs)
