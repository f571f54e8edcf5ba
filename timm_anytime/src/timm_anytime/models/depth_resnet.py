"""Depth-nested Sparse ResNets: the units of every resolution stage interlaced into levels (SPEC 4).

Subnetwork D_s holds the units of level <= s. A unit of level s aggregates (sparse rule, by
summation) inside the unit sequence of D_s, from the outputs of earlier units of levels <= s and
from level s's own stage input; so nothing of a higher level ever reaches D_s. Every level has its
own transitions between resolution stages and its own head (BN-ReLU-pool-Linear).

Because the interlacing is recursive, D_k of an L-level network is exactly the k-level network on
N / 2^(L-k) units per stage: ``extract_stage(k)`` returns that smaller network (for k = 1 a plain
:class:`SparseResNet`).
"""

from collections.abc import Generator
from typing import Any

import torch
from timm.models import register_model
from torch import Tensor, nn

from ..layers.sparse_blocks import InterlacedStage, LevelTransitions
from ..layers.sparse_body import InterlacedBodyMixin, interlaced_key
from ..sparse import unit_levels
from .anytime import AnytimeMixin, keep_rows
from .cfgs import cifar_cfg, imagenet_cfg
from .heads import NormedHeadsMixin
from .intermediates import FeatureIntermediatesMixin
from .pretrained import anytime_default_cfgs, build_anytime_model, hook_feature_cfg
from .sparse_resnet import SparseResNet
from .widths import scaled_widths


class DepthNestedSparseResNet(
    FeatureIntermediatesMixin, InterlacedBodyMixin, NormedHeadsMixin, AnytimeMixin, nn.Module
):
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
        unit_levels(units_per_stage, levels)  # validates the interlacing
        dd = {"device": device, "dtype": dtype}
        widths = scaled_widths(channels, width)
        self.num_classes, self.in_chans, self.drop_rate = num_classes, in_chans, drop_rate
        self.units_per_stage, self.levels, self.channels, self.stem_kind = units_per_stage, levels, channels, stem
        self.width = width
        self.num_stages = self.stage = levels
        self._build_body(
            widths=widths,
            in_chans=in_chans,
            stem=stem,
            make_stage=lambda c: InterlacedStage(c, units_per_stage, levels, **dd),
            make_transition=lambda c_in, c: LevelTransitions(c_in, c, levels, **dd),
            feature_module="stage{}.out",
            dd=dd,
        )
        norms = nn.ModuleList(nn.BatchNorm2d(widths[-1], **dd) for _ in range(levels))
        self._build_head("norms", norms, widths[-1], global_pool, num_classes, dd)

    def _make_heads(self, num_classes: int, dd: dict[str, Any]) -> nn.ModuleList:
        if num_classes <= 0:
            return nn.ModuleList(nn.Identity() for _ in range(self.levels))
        return nn.ModuleList(nn.Linear(self.num_features, num_classes, **dd) for _ in range(self.levels))

    # ------------------------------------------------------------------ anytime bookkeeping
    @torch.jit.ignore
    def element_stages(self) -> dict[nn.Parameter, Tensor]:
        """Whole tensors: the stem belongs to stage 1, a unit to its level, a transition to its level."""
        owners: dict[nn.Parameter, Tensor] = {}
        for level, module in self._level_modules():
            for param in module.parameters():
                owners[param] = torch.full_like(param, level, dtype=torch.long)
        return owners

    # ------------------------------------------------------------------ timm model API

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
        self._check_pooled("forward_stages")
        outputs = self._level_outputs(x, self.num_stages)
        return [self._logits(out, index) for index, out in enumerate(outputs)]

    @torch.jit.ignore
    def forward_anytime(self, x: Tensor) -> Generator[Tensor, Tensor | None, None]:
        """Yield stage 1, 2, ... logits; stage k runs only the units and transitions of level k.
        ``send(rows)`` after a stage continues with those inputs only."""
        self._check_pooled("forward_anytime")
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
def extract_depth_stage(model: "DepthNestedSparseResNet", stage: int) -> "SparseResNet | DepthNestedSparseResNet":
    """D_stage of a depth-nested Sparse ResNet as a standalone network with copied weights.

    The interlacing is recursive: the units of levels <= k, renumbered in order, are exactly the
    k-level interlacing of N / 2^(L - k) units, with the same wiring. So D_k is the last stage of a
    k-level network of that size (for k = 1: a plain ``SparseResNet``, whose sparse rule is level
    1's wiring).
    """
    plain = depth_level_network(model, stage, channels=model.channels, stem=model.stem_kind, width=model.width)
    mapped: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        target = interlaced_key(model, key, stage)
        if target is not None:
            mapped[target] = value.clone()
    plain.load_state_dict(mapped, strict=True)
    plain.pretrained_cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    return plain.train(model.training)


def depth_level_network(
    model: InterlacedBodyMixin, depth: int, **args: Any
) -> "SparseResNet | DepthNestedSparseResNet":
    """The ``depth``-level depth-nested Sparse ResNet on N / 2^(levels - depth) units of ``model``
    (a plain ``SparseResNet`` for depth 1), with ``model``'s classes, input channels, pooling,
    dropout, device and dtype, and ``args`` (channels, stem, ...): what an extracted stage is built as."""
    weight = model.conv1.weight
    common: dict[str, Any] = dict(
        units_per_stage=model.units_per_stage // 2 ** (model.levels - depth),
        num_classes=model.num_classes,
        in_chans=model.in_chans,
        global_pool=model.global_pool.pool_type,
        drop_rate=model.drop_rate,
        device=weight.device,
        dtype=weight.dtype,
    )
    return SparseResNet(**common, **args) if depth == 1 else DepthNestedSparseResNet(levels=depth, **common, **args)


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
    feature_cfg = hook_feature_cfg(len(args["channels"]))
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
