"""Width-nested anytime ResNets (SPEC section 3), ImageNet and CIFAR families: blocks, the model,
``extract_stage``'s conversion to a plain network, and the registered names at the bottom.

Layout and parameter names follow ``timm.models.resnet.ResNet`` (``conv1``, ``bn1``,
``layer1.0.conv1``, ``layer1.0.downsample.0``, ...): at full width, the body's state dict has
the keys and shapes of the dense network. ``fc`` holds one head per stage (``fc.0``, ``fc.1``,
...), head k reading the pooled prefix of stripes <= k.
"""

from collections.abc import Generator
from typing import TYPE_CHECKING, Any, cast

import torch
from timm.layers import SelectAdaptivePool2d
from timm.models import register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import Tensor, nn
from torch.nn import functional as F

from ..layers.checkpointing import checkpoint_blocks
from ..layers.nested import (
    NestedBatchNorm2d,
    NestedConv2d,
    dense_state,
    grow,
    init_conv_weights,
    prefix_of,
    zero_pad_stripe,
)
from ..layers.stochastic_depth import block_drop_paths
from ..stripes import StripeSpec
from .anytime import AnytimeMixin, keep_rows
from .cfgs import cifar_cfg, imagenet_cfg
from .cifar_resnet import CIFAR_DEPTHS, CifarResNet
from .heads import MultiHeadMixin
from .intermediates import FeatureIntermediatesMixin
from .pretrained import anytime_default_cfgs, build_anytime_model
from .widths import scaled_widths


def _conv_bn_stripe(conv: NestedConv2d, bn: NestedBatchNorm2d, x: Tensor, k: int) -> Tensor:
    """Stripe k of ``bn(conv(x))`` from the input prefix ``x`` of stripes <= k."""
    return bn.forward_stripe(conv.forward_stripe(x, k), k)


class _NestedResidualBlock(nn.Module):
    """What both residual blocks share: the shortcut, dense or one stripe at a time."""

    in_splits: list[int]

    def _init_shortcut(self, inplanes: int, out: int, stride: int, kind: str, dd: dict[str, Any]) -> None:
        spec = dd["spec"]
        self.downsample = None
        self.zero_pad = False
        if stride != 1 or inplanes != out:
            if kind == "projection":
                self.downsample = nn.Sequential(
                    NestedConv2d(inplanes, out, 1, stride, **dd), NestedBatchNorm2d(out, **dd)
                )
            elif kind == "zero_pad":
                if out != 2 * inplanes or stride != 2:
                    raise ValueError("the zero-padded shortcut doubles the channels at stride 2")
                self.zero_pad = True
            else:
                raise ValueError(f"unknown shortcut {kind!r}: use 'projection' or 'zero_pad'")
        self.stride = stride
        self.num_stages = spec.num_stages
        self.stage = spec.num_stages
        self.in_splits = list(spec.splits(inplanes))

    def _shortcut(self, x: Tensor) -> Tensor:
        if self.downsample is not None:
            return self.downsample(x)
        if self.zero_pad:
            # Option A per stripe: each input stripe lands in the first half of its output stripe.
            parts = [
                zero_pad_stripe(x[:, self.in_splits[j] : self.in_splits[j + 1]], self.stride) for j in range(self.stage)
            ]
            return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return x

    def _shortcut_stripe(self, x: Tensor, k: int) -> Tensor:
        if self.downsample is not None:
            conv, bn = cast(NestedConv2d, self.downsample[0]), cast(NestedBatchNorm2d, self.downsample[1])
            return _conv_bn_stripe(conv, bn, x, k)
        new = x[:, self.in_splits[k - 1] : self.in_splits[k]]
        return zero_pad_stripe(new, self.stride) if self.zero_pad else new


class NestedBasicBlock(_NestedResidualBlock):
    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int,
        *,
        spec: StripeSpec,
        shortcut: str,
        drop_path: nn.Module | None = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"spec": spec, "device": device, "dtype": dtype}
        out = planes * self.expansion
        self.conv1 = NestedConv2d(inplanes, planes, 3, stride, 1, **dd)
        self.bn1 = NestedBatchNorm2d(planes, **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = NestedConv2d(planes, out, 3, 1, 1, **dd)
        self.bn2 = NestedBatchNorm2d(out, **dd)
        self.act2 = nn.ReLU(inplace=True)
        self.drop_path = drop_path  # stochastic depth of the residual branch (timm's DropPath), or None
        self._init_shortcut(inplanes, out, stride, shortcut, dd)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = self._shortcut(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        if self.drop_path is not None:
            x = self.drop_path(x)
        return self.act2(x + shortcut)

    def forward_stripe(self, x: Tensor, k: int, cache: dict[str, tuple[Tensor, int]], key: str) -> Tensor:
        """Stripe k of this block's output, from the input prefix of stripes <= k; returns the prefix."""
        h = grow(cache, key + ".h1", self.act1(_conv_bn_stripe(self.conv1, self.bn1, x, k)), self.conv1.out_channels)
        y = _conv_bn_stripe(self.conv2, self.bn2, h, k)
        return grow(cache, key, self.act2(y + self._shortcut_stripe(x, k)), self.conv2.out_channels)


class NestedBottleneck(_NestedResidualBlock):
    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int,
        *,
        spec: StripeSpec,
        shortcut: str,
        drop_path: nn.Module | None = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"spec": spec, "device": device, "dtype": dtype}
        out = planes * self.expansion
        self.conv1 = NestedConv2d(inplanes, planes, 1, **dd)
        self.bn1 = NestedBatchNorm2d(planes, **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = NestedConv2d(planes, planes, 3, stride, 1, **dd)
        self.bn2 = NestedBatchNorm2d(planes, **dd)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = NestedConv2d(planes, out, 1, **dd)
        self.bn3 = NestedBatchNorm2d(out, **dd)
        self.act3 = nn.ReLU(inplace=True)
        self.drop_path = drop_path  # stochastic depth of the residual branch (timm's DropPath), or None
        self._init_shortcut(inplanes, out, stride, shortcut, dd)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = self._shortcut(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        if self.drop_path is not None:
            x = self.drop_path(x)
        return self.act3(x + shortcut)

    def forward_stripe(self, x: Tensor, k: int, cache: dict[str, tuple[Tensor, int]], key: str) -> Tensor:
        """Stripe k of this block's output, from the input prefix of stripes <= k; returns the prefix."""
        h = grow(cache, key + ".h1", self.act1(_conv_bn_stripe(self.conv1, self.bn1, x, k)), self.conv1.out_channels)
        h = grow(cache, key + ".h2", self.act2(_conv_bn_stripe(self.conv2, self.bn2, h, k)), self.conv2.out_channels)
        y = _conv_bn_stripe(self.conv3, self.bn3, h, k)
        return grow(cache, key, self.act3(y + self._shortcut_stripe(x, k)), self.conv3.out_channels)


class NestedResNet(FeatureIntermediatesMixin, MultiHeadMixin, AnytimeMixin, nn.Module):
    """A width-nested ResNet: S stages, subnetwork D_k = stripes 1..k of every layer.

    Args:
        block: ``"basic"`` or ``"bottleneck"``.
        layers: Blocks per stage of the network (e.g. ``(3, 4, 6, 3)``).
        nesting: Stripe spec, ``"w124"`` (power-of-two), ``"e1234"`` (equal) or a ``StripeSpec``.
        num_classes: Classes of every head (0: no heads, ``model(x)`` returns pooled features).
        in_chans: Input channels.
        stem: ``"imagenet"`` (7x7 stride-2 conv and max-pool) or ``"cifar"`` (3x3 conv).
        channels: Planes per stage of the full network (before ``width``).
        stem_width: Stem channels of the full network (before ``width``).
        width: Multiplier on every layer's width.
        shortcut: ``"projection"`` (1x1 conv + BN, timm's ResNet) or ``"zero_pad"`` (CIFAR option A).
        global_pool: ``"avg"``, ``"max"`` or ``""`` (no pooling, no head).
        drop_rate: Dropout before the heads.
        drop_path_rate: Stochastic depth of the residual branches, rising linearly over the blocks to
            this rate (timm's ResNet rule). Training only: ``forward_anytime`` refuses it in
            training mode (its stripes, computed in separate calls, would draw different masks).
        zero_init_last: Zero the last BN of every residual branch, as timm does.
    """

    feature_splits: list[int]
    separate_stage_passes = True  # D_S's forward is exactly forward_stages' pass
    if TYPE_CHECKING:  # added by name: declared for the type checker alone (TorchScript would read
        # a class annotation of a submodule as its type)
        conv1: NestedConv2d
        layer1: nn.Sequential
        layer2: nn.Sequential
        layer3: nn.Sequential
        layer4: nn.Sequential

    def __init__(
        self,
        block: str = "basic",
        layers: tuple[int, ...] = (2, 2, 2, 2),
        nesting: str | StripeSpec = "w124",
        num_classes: int = 1000,
        in_chans: int = 3,
        stem: str = "imagenet",
        channels: tuple[int, ...] = (64, 128, 256, 512),
        stem_width: int = 64,
        width: float = 1.0,
        shortcut: str = "projection",
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        zero_init_last: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        spec = nesting if isinstance(nesting, StripeSpec) else StripeSpec.parse(nesting)
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"unknown block {block!r}: use 'basic' or 'bottleneck'")
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"unknown stem {stem!r}: use 'imagenet' or 'cifar'")
        self.check_pool(global_pool)
        if len(layers) != len(channels):
            raise ValueError(f"layers {layers} and channels {channels} must have the same length")
        block_cls = NestedBasicBlock if block == "basic" else NestedBottleneck
        dd = {"device": device, "dtype": dtype}
        self.spec = spec
        self.num_stages = spec.num_stages
        self.stage = spec.num_stages
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.drop_path_rate = drop_path_rate
        drop_paths = iter(block_drop_paths(drop_path_rate, sum(layers)))
        self.grad_checkpointing = False
        self.block_type, self.layer_sizes, self.stem_type, self.shortcut_type = block, tuple(layers), stem, shortcut

        inplanes, *scaled = scaled_widths((stem_width, *channels), width)  # the stem, then every stage
        self.widths = tuple(scaled)
        self.stem_channels = inplanes
        if stem == "imagenet":
            self.conv1 = NestedConv2d(in_chans, inplanes, 7, 2, 3, spec=spec, striped_input=False, **dd)
        else:
            self.conv1 = NestedConv2d(in_chans, inplanes, 3, 1, 1, spec=spec, striped_input=False, **dd)
        self.bn1 = NestedBatchNorm2d(inplanes, spec=spec, **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if stem == "imagenet" else nn.Identity()
        reduction = 2 if stem == "imagenet" else 1
        self.feature_info = [dict(num_chs=inplanes, reduction=reduction, module="act1")]
        if stem == "imagenet":
            reduction *= 2
        for index, (planes, blocks) in enumerate(zip(scaled, layers, strict=True)):
            stride = 1 if index == 0 else 2
            modules = []
            for b in range(blocks):
                modules.append(
                    block_cls(
                        inplanes,
                        planes,
                        stride if b == 0 else 1,
                        spec=spec,
                        shortcut=shortcut,
                        drop_path=next(drop_paths),
                        **dd,
                    )
                )
                inplanes = planes * block_cls.expansion
            reduction *= stride
            self.add_module(f"layer{index + 1}", nn.Sequential(*modules))
            self.feature_info.append(dict(num_chs=inplanes, reduction=reduction, module=f"layer{index + 1}"))
        self.num_features = self.head_hidden_size = inplanes
        self.feature_splits = list(spec.splits(inplanes))
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        self.fc = self._make_heads(num_classes, dd)

        init_conv_weights(self)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, (NestedBasicBlock, NestedBottleneck)):
                    m.zero_init_last()

    def _make_heads(self, num_classes: int, dd: dict[str, Any]) -> nn.ModuleList:
        if num_classes <= 0:
            return nn.ModuleList(nn.Identity() for _ in range(self.num_stages))
        return nn.ModuleList(
            nn.Linear(self.feature_splits[k], num_classes, **dd) for k in range(1, self.num_stages + 1)
        )

    # ------------------------------------------------------------------ timm model API
    @torch.jit.ignore
    def heads(self) -> nn.ModuleList:
        return self.fc

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^conv1|bn1|maxpool", blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def _layers(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.layer_sizes))]

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_blocks(self._layers(), x)
        x = self.layer3(self.layer2(self.layer1(x)))
        if hasattr(self, "layer4"):  # the ImageNet family has four stages, the CIFAR family three
            x = self.layer4(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Logits of the active stage (default: the last), from D_stage alone."""
        return self.forward_head(self.forward_features(x))

    # ------------------------------------------------------------------ anytime API
    @torch.jit.ignore
    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """All stages' logits from one pass of the full network (for training)."""
        self._check_pooled("forward_stages")
        active = self.stage
        self.set_active_stage(self.num_stages)
        try:
            pooled = self.global_pool(self.forward_features(x))
        finally:
            self.set_active_stage(active)
        if self.drop_rate > 0.0:
            pooled = F.dropout(pooled, p=self.drop_rate, training=self.training)
        return [head(pooled[:, : self.feature_splits[k + 1]]) for k, head in enumerate(self.fc)]

    @torch.jit.ignore
    def forward_anytime(self, x: Tensor) -> Generator[Tensor, Tensor | None, None]:
        """Yield stage 1, 2, ... logits; stage k computes only stripe k of every layer and reuses
        every activation of stages < k. Stop iterating whenever time is up; ``send(rows)`` after a
        stage continues with those inputs only."""
        self._check_pooled("forward_anytime")
        if self.training and self.drop_path_rate > 0.0:
            raise RuntimeError(
                "forward_anytime computes each stripe in its own call, so in training mode stochastic depth would "
                "draw a different mask per stripe: call model.eval() first (or train with forward_stages / "
                "set_active_stage, which drop whole branches consistently)"
            )
        cache: dict[str, tuple[Tensor, int]] = {}
        for k in range(1, self.num_stages + 1):
            h = self.act1(self.bn1.forward_stripe(self.conv1.forward_stripe(x, k), k))
            h = grow(cache, "stem", self.maxpool(h), self.stem_channels)
            for layer_index, layer in enumerate(self._layers()):
                for block_index, block in enumerate(layer):
                    key = f"layer{layer_index + 1}.{block_index}"
                    h = cast("NestedBasicBlock | NestedBottleneck", block).forward_stripe(h, k, cache, key)
            new = h[:, self.feature_splits[k - 1] : self.feature_splits[k]]
            pooled = grow(cache, "pool", self.global_pool(new), self.num_features)
            if self.drop_rate > 0.0:
                pooled = F.dropout(pooled, p=self.drop_rate, training=self.training)
            rows = yield self.fc[k - 1](pooled)
            if rows is not None:  # continue with these inputs only (see AnytimeMixin)
                x, cache = keep_rows(x, rows), keep_rows(cache, rows)

    @torch.jit.ignore
    def extract_stage(self, stage: int) -> nn.Module:
        """A standalone ordinary network equal to D_stage: a ``timm.models.resnet.ResNet`` for the
        ImageNet family, a ``CifarResNet`` for the CIFAR family."""
        return extract_width_stage(self, self.check_stage(stage))


# ---------------------------------------------------------------------- extraction
def extract_width_stage(model: NestedResNet, stage: int) -> ResNet | CifarResNet:
    spec = model.spec
    planes = tuple(spec.splits(c)[stage] for c in model.widths)  # D_k's width of every stage
    stem = spec.splits(model.stem_channels)[stage]
    head = model.fc[stage - 1]
    num_classes = head.out_features if isinstance(head, nn.Linear) else 0
    pool = model.global_pool.pool_type
    dd: dict[str, Any] = {"device": model.conv1.weight.device, "dtype": model.conv1.weight.dtype}
    plain: ResNet | CifarResNet
    if model.stem_type == "imagenet" and model.shortcut_type == "projection":
        plain = ResNet(
            BasicBlock if model.block_type == "basic" else Bottleneck,  # type: ignore[arg-type]  # (timm: the class)
            model.layer_sizes,
            num_classes=num_classes,
            in_chans=model.conv1.in_channels,
            channels=planes,
            global_pool=pool,
            drop_rate=model.drop_rate,
            drop_path_rate=model.drop_path_rate,
            **dd,
        )
        _narrow_stem(plain, stem, dd)
        perm = None
    elif model.stem_type == "cifar" and model.shortcut_type == "zero_pad" and model.block_type == "basic":
        if stem != planes[0]:
            raise NotImplementedError("extracting a CIFAR network needs stem width == first stage width")
        plain = CifarResNet(
            model.layer_sizes[0],
            num_classes=num_classes,
            in_chans=model.conv1.in_channels,
            channels=planes,
            global_pool=pool,
            drop_rate=model.drop_rate,
            drop_path_rate=model.drop_path_rate,
            **dd,
        )
        perm = _cifar_permutations(model, stage)
    else:
        raise NotImplementedError(
            f"no plain counterpart for stem={model.stem_type!r} with shortcut={model.shortcut_type!r}"
        )

    source = dense_state(model)
    state: dict[str, Tensor] = {}
    for key, target in plain.state_dict().items():
        name = f"fc.{stage - 1}." + key[3:] if key.startswith("fc.") else key
        tensor = source[name]
        if perm is not None:
            tensor = _permute(key, tensor, perm)
        state[key] = prefix_of(tensor, target.shape).clone()
    plain.load_state_dict(state)
    plain.train(model.training)
    return plain


def _narrow_stem(plain: ResNet, stem: int, dd: dict) -> None:
    """timm's ResNet fixes a 7x7 stem at 64 channels; D_k's stem has ``stem`` channels. Rebuild the
    stem and the first block (timm's own block class) at that width, in place."""
    conv1, layer1 = cast(nn.Conv2d, plain.conv1), cast(nn.Sequential, plain.layer1)  # (no deep stem)
    if stem == conv1.out_channels:
        return
    block = cast("BasicBlock | Bottleneck", layer1[0])
    block_cls = type(block)
    out = block.conv3.out_channels if isinstance(block, Bottleneck) else block.conv2.out_channels
    planes = block.conv1.out_channels
    # (timm's ResNet.conv1 is typed from its deep-stem branch, an nn.Sequential)
    plain.conv1 = nn.Conv2d(conv1.in_channels, stem, 7, 2, 3, bias=False, **dd)  # type: ignore[assignment]
    plain.bn1 = nn.BatchNorm2d(stem, **dd)
    downsample = None
    if stem != out:
        downsample = nn.Sequential(nn.Conv2d(stem, out, 1, 1, bias=False, **dd), nn.BatchNorm2d(out, **dd))
    layer1[0] = block_cls(stem, planes, 1, downsample=downsample, **dd)
    plain.feature_info[0]["num_chs"] = stem


def _cifar_permutations(model: NestedResNet, stage: int) -> dict[int, Tensor]:
    """Channel order of each CIFAR stage: plain channel p holds nested channel perm[p].

    The nested option-A shortcut pads each stripe separately; the plain one pads once at the end.
    Both are the same network up to this permutation of every stage's channels.
    """
    spec = model.spec
    widths = [model.stem_channels, *model.widths]
    perms = {1: torch.arange(spec.splits(widths[1])[stage])}
    for s in (2, 3):
        inner, outer = spec.splits(widths[s - 1]), spec.splits(widths[s])
        location = {}  # nested input channel -> nested output channel of the padded shortcut
        zeros = []
        for j in range(1, stage + 1):
            width = inner[j] - inner[j - 1]
            for o in range(width):
                location[inner[j - 1] + o] = outer[j - 1] + o
                zeros.append(outer[j - 1] + width + o)
        perms[s] = torch.tensor([location[int(q)] for q in perms[s - 1]] + zeros)
    return perms


def _permute(key: str, tensor: Tensor, perms: dict[int, Tensor]) -> Tensor:
    """Reorder a nested tensor's channels into the plain network's order."""
    if key.startswith(("conv1.", "bn1.")):
        out_perm, in_perm = perms[1], None
    elif key.startswith("fc."):
        return tensor[:, perms[3]] if key.endswith("weight") else tensor
    else:
        layer = int(key[len("layer")])
        block = int(key.split(".")[1])
        out_perm = perms[layer]
        in_perm = perms[layer - 1] if (block == 0 and layer > 1 and ".conv1." in f".{key}") else perms[layer]
    if tensor.dim() == 0:
        return tensor
    tensor = tensor.index_select(0, out_perm.to(tensor.device))
    if tensor.dim() == 4 and in_perm is not None:
        tensor = tensor.index_select(1, in_perm.to(tensor.device))
    return tensor


# ---------------------------------------------------------------------- registry
NESTINGS = ("w124", "e1234")
IMAGENET_ARCHS: dict[int, dict[str, Any]] = {
    18: dict(block="basic", layers=(2, 2, 2, 2)),
    34: dict(block="basic", layers=(3, 4, 6, 3)),
    50: dict(block="bottleneck", layers=(3, 4, 6, 3)),
    101: dict(block="bottleneck", layers=(3, 4, 23, 3)),
}
#: name -> NestedResNet arguments of every registered width-nested model
MODEL_ARGS: dict[str, dict[str, Any]] = {}
for _depth, _arch in IMAGENET_ARCHS.items():
    for _nesting in NESTINGS:
        MODEL_ARGS[f"anytime_resnet{_depth}_{_nesting}"] = dict(_arch, nesting=_nesting)
for _depth, _blocks in CIFAR_DEPTHS.items():
    for _nesting in NESTINGS:
        MODEL_ARGS[f"anytime_cifar_resnet{_depth}_{_nesting}"] = dict(
            block="basic",
            layers=(_blocks,) * 3,
            nesting=_nesting,
            stem="cifar",
            channels=(16, 32, 64),
            stem_width=16,
            shortcut="zero_pad",
            num_classes=10,
            # As He et al.'s CIFAR ResNet and our plain Oracle (cifar_resnet*): no zero-initialized
            # last BatchNorm. With option-A shortcuts it slows early training badly (docs/models.md).
            zero_init_last=False,
        )


def _cfg(args: dict[str, Any]) -> dict[str, Any]:
    family_cfg = cifar_cfg if args.get("stem") == "cifar" else imagenet_cfg
    heads = tuple(f"fc.{i}" for i in range(StripeSpec.parse(args["nesting"]).num_stages))
    return family_cfg(classifier=heads)


default_cfgs = anytime_default_cfgs({name: _cfg(args) for name, args in MODEL_ARGS.items()})


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> NestedResNet:
    args = {**MODEL_ARGS[variant], **kwargs}
    feature_cfg = dict(out_indices=tuple(range(len(args["layers"]) + 1)))  # the stem, then every stage
    return build_anytime_model(NestedResNet, variant, pretrained, feature_cfg=feature_cfg, **args)


@register_model
def anytime_resnet18_w124(pretrained: bool = False, **kwargs: Any) -> NestedResNet:
    """Width-nested ResNet-18 (ImageNet layout), nesting w124: stages of width 1/4, 1/2, 1."""
    return _create("anytime_resnet18_w124", pretrained, **kwargs)


@register_model
def anytime_resnet18_e1234(pretrained: bool = False, **kwargs: Any) -> NestedResNet:
    """Width-nested ResNet-18 (ImageNet layout), nesting e1234: four equal stripes."""
    return _create("anytime_resnet18_e1234", pretrained, **kwargs)


@register_model
def anytime_resnet34_w124(pretrained: bool = False, **kwargs: Any) -> NestedResNet:
    """Width-nested ResNet-34 (ImageNet layout), nesting w124: stages of width 1/4, 1/2, 1."""
    return _create("anytime_resnet34_w124", pretrained, **kwargs)


@register_model
def anytime_resnet34_e1234(pretrained: bool = False, **kwargs: Any) -> NestedResNet:
    """Width-nested ResNet-34 (ImageNet layout), nesting e1234: four equal stripes."""
    return _create("anytime_resnet34_e1234", pretrained, **kwargs)


@register_model
def anytime_resnet50_w124(pretrained: bool = False, **kwargs: Any) -> NestedResNet:
    """Width-nested ResNet-50 (ImageNet layout), nesting w124: stages of width 1/4, 1/2, 1."""
    return _create("anytime_resnet50_w124", pretrained, **kwargs)


@register_model
def anytime_resnet50_e1234(pretrained: bool = False, **kwargs: Any) -> NestedResNet:
    """Width-nested ResNet-50 (ImageNet layout), nesting e1234: four equal stripes."""
    return _create("anytime_resnet50_e1234", pretrained, **kwargs)


@register_model
def anytime_resnet101_w124(pretrained: bool = False, **kwargs: Any) -> NestedResNet:
    """Width-nested ResNet-101 (ImageNet layout), nesting w124: stages of width 1/4, 1/2, 1."""
    return _create("anytime_resnet101_w124", pretrained, **kwargs)


@register_model
def anytime_resnet101_e1234(pretrained: bool = False, **kwargs: Any) -> NestedResNet:
    """Width-nested ResNet-101 (ImageNet layout), nesting e1234: four equal stripes."""
    return _create("anytime_resnet101_e1234", pretrained, **kwargs)


@register_model
def anytime_cifar_resnet20_w124(pretrained: bool = False, **kwargs: Any) -> NestedResNet:
    """Width-nested CIFAR ResNet-20 (option-A shortcuts), nesting w124: stages of width 1/4, 1/2, 1."""
    return _create("anytime_cifar_resnet20_w124", pretrained, **kwargs)


@register_model
def anytime_cifar_resnet20_e1234(pretrained: bool = False, **kwargs: Any) -> NestedResNet:
    """Width-nested CIFAR ResNet-20 (option-A shortcuts), nesting e1234: four equal stripes."""
    return _create("anytime_cifar_resnet20_e1234", pretrained, **kwargs)


@register_model
def anytime_cifar_resnet42_w124(pretrained: bool = False, **kwargs: Any) -> NestedResNet:
    """Width-nested CIFAR ResNet-42 (option-A shortcuts), nesting w124: stages of width 1/4, 1/2, 1."""
    return _create("anytime_cifar_resnet42_w124", pretrained, **kwargs)


@register_model
def anytime_cifar_resnet42_e1234(pretrained: bool = False, **kwargs: Any) -> NestedResNet:
    """Width-nested CIFAR ResNet-42 (option-A shortcuts), nesting e1234: four equal stripes."""
    return _create("anytime_cifar_resnet42_e1234", pretrained, **kwargs)


@register_model
def anytime_cifar_resnet56_w124(pretrained: bool = False, **kwargs: Any) -> NestedResNet:
    """Width-nested CIFAR ResNet-56 (option-A shortcuts), nesting w124: stages of width 1/4, 1/2, 1."""
    return _create("anytime_cifar_resnet56_w124", pretrained, **kwargs)


@register_model
def anytime_cifar_resnet56_e1234(pretrained: bool = False, **kwargs: Any) -> NestedResNet:
    """Width-nested CIFAR ResNet-56 (option-A shortcuts), nesting e1234: four equal stripes."""
    return _create("anytime_cifar_resnet56_e1234", pretrained, **kwargs)
