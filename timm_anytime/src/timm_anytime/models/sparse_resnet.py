"""Plain Sparse ResNets (SparseNet aggregation by summation, SPEC section 4): the depth-nesting base.

Inside a resolution stage, unit l (pre-activation BN-ReLU-conv3x3-BN-ReLU-conv3x3) reads the sum of
the outputs at positions ``l - 2^k`` (position 0: the stage input), and the stage output is that
sum at position N + 1. Between stages: BN-ReLU-conv1x1 (widen)-avgpool2. Head: BN-ReLU-pool-Linear.
Depth counts 2 convolutions per unit plus stem and classifier:

* ``cifar_sparse_resnet{26,50,98}``: 3x3 stem, 3 stages of 4 / 8 / 16 units, widths (16, 32, 64).
* ``sparse_resnet{18,34,66}``: ImageNet stem (7x7 stride 2, max-pool), 4 stages of 2 / 4 / 8 units,
  widths (64, 128, 256, 512).

The paper does not print its widths; these follow the ResNets of the same datasets (a
reconstruction, like SPEC section 3). ``width`` scales every layer.
"""

from typing import Any

import torch
from timm.layers import SelectAdaptivePool2d
from timm.models import register_model
from torch import Tensor, nn

from ..sparse import sparse_inputs
from .cfgs import cifar_cfg, imagenet_cfg
from .pretrained import anytime_default_cfgs, build_anytime_model
from .single_head import SingleHeadMixin


class SparseUnit(nn.Module):
    """Pre-activation basic unit: BN-ReLU-conv3x3-BN-ReLU-conv3x3."""

    def __init__(self, channels: int, device=None, dtype=None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.bn1 = nn.BatchNorm2d(channels, **dd)
        self.act1 = nn.ReLU()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(channels, **dd)
        self.act2 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False, **dd)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.act2(self.bn2(self.conv1(self.act1(self.bn1(x))))))


class SparseStage(nn.Module):
    """N units with sparse aggregation by summation; returns the aggregate at position N + 1."""

    inputs: list[list[int]]

    def __init__(self, channels: int, num_units: int, device=None, dtype=None) -> None:
        super().__init__()
        self.units = nn.ModuleList(SparseUnit(channels, device=device, dtype=dtype) for _ in range(num_units))
        self.inputs = [sparse_inputs(position) for position in range(1, num_units + 2)]
        self.grad_checkpointing = False

    def _aggregate(self, outputs: list[Tensor], index: int) -> Tensor:
        positions = self.inputs[index]
        total = outputs[positions[0]]
        for position in positions[1:]:
            total = total + outputs[position]
        return total

    def forward(self, x: Tensor) -> Tensor:
        outputs = [x]
        for index, unit in enumerate(self.units):
            aggregate = self._aggregate(outputs, index)
            if self.grad_checkpointing and not torch.jit.is_scripting():
                outputs.append(torch.utils.checkpoint.checkpoint(unit, aggregate, use_reentrant=False))
            else:
                outputs.append(unit(aggregate))
        return self._aggregate(outputs, len(self.inputs) - 1)


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1 (widen)-avgpool2 between two resolution stages."""

    def __init__(self, in_channels: int, out_channels: int, device=None, dtype=None) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(in_channels, **dd))
        self.add_module("act", nn.ReLU())
        self.add_module("conv", nn.Conv2d(in_channels, out_channels, 1, bias=False, **dd))
        self.add_module("pool", nn.AvgPool2d(2))


class SparseTimmMixin:
    """timm's layer-grouping and gradient-checkpointing API, shared by every Sparse ResNet family."""

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        units = r"^stage(\d+)" if coarse else r"^stage(\d+)\.units\.(\d+)"
        # A transition follows every unit of the stage before it; the final norm(s) come last.
        blocks = [(units, None), (r"^transition(\d+)", (99999,)), (r"^norm", (99999,))]
        return dict(stem=r"^conv1|bn1|maxpool", blocks=blocks)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every unit in the backward pass instead of storing its activations."""
        for module in self.modules():  # type: ignore[attr-defined]
            if hasattr(module, "grad_checkpointing"):
                module.grad_checkpointing = enable


class SparseResNet(SparseTimmMixin, SingleHeadMixin, nn.Module):
    """A Sparse ResNet: resolution stages of sparsely aggregated pre-activation units.

    Args:
        units_per_stage: Units in every resolution stage (N).
        channels: Width of each resolution stage, before ``width``.
        stem: ``"cifar"`` (3x3 conv) or ``"imagenet"`` (7x7 stride-2 conv, BN, ReLU, max-pool).
        width: Multiplier on every layer's width.
    """

    def __init__(
        self,
        units_per_stage: int = 16,
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
        if units_per_stage < 1:
            raise ValueError(f"units_per_stage must be at least 1, got {units_per_stage}")
        dd = {"device": device, "dtype": dtype}
        widths = [round(c * width) for c in channels]
        if min(widths) < 1:
            raise ValueError(f"width={width} leaves a stage with no channels")
        self.num_classes, self.in_chans, self.drop_rate = num_classes, in_chans, drop_rate
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
                self.add_module(f"transition{index}", Transition(widths[index - 1], channels_i, **dd))
                reduction *= 2
            self.add_module(f"stage{index + 1}", SparseStage(channels_i, units_per_stage, **dd))
            self.feature_info.append(dict(num_chs=channels_i, reduction=reduction, module=f"stage{index + 1}"))
        self.norm = nn.BatchNorm2d(widths[-1], **dd)
        self.act = nn.ReLU()
        self.num_features = self.head_hidden_size = widths[-1]
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        self.fc = nn.Linear(widths[-1], num_classes, **dd) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        if hasattr(self, "maxpool"):  # the ImageNet stem
            x = self.maxpool(self.act1(self.bn1(x)))
        x = self.stage1(x)
        x = self.stage2(self.transition1(x))
        x = self.stage3(self.transition2(x))
        if hasattr(self, "stage4"):
            x = self.stage4(self.transition3(x))
        return self.act(self.norm(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


SPARSE_CIFAR_UNITS = {26: 4, 50: 8, 98: 16}
SPARSE_IMAGENET_UNITS = {18: 2, 34: 4, 66: 8}


default_cfgs = anytime_default_cfgs(
    {
        **{f"cifar_sparse_resnet{depth}": cifar_cfg() for depth in SPARSE_CIFAR_UNITS},
        **{f"sparse_resnet{depth}": imagenet_cfg() for depth in SPARSE_IMAGENET_UNITS},
    }
)


def _create(variant: str, pretrained: bool, **kwargs: Any) -> SparseResNet:
    return build_anytime_model(SparseResNet, variant, pretrained, **kwargs)


def _cifar(depth: int, pretrained: bool, kwargs: dict[str, Any]) -> SparseResNet:
    args = dict(units_per_stage=SPARSE_CIFAR_UNITS[depth], channels=(16, 32, 64), stem="cifar", num_classes=10)
    return _create(
        f"cifar_sparse_resnet{depth}", pretrained, feature_cfg=dict(out_indices=(0, 1, 2, 3)), **{**args, **kwargs}
    )


def _imagenet(depth: int, pretrained: bool, kwargs: dict[str, Any]) -> SparseResNet:
    args = dict(units_per_stage=SPARSE_IMAGENET_UNITS[depth], channels=(64, 128, 256, 512), stem="imagenet")
    args["num_classes"] = 1000
    return _create(
        f"sparse_resnet{depth}", pretrained, feature_cfg=dict(out_indices=(0, 1, 2, 3, 4)), **{**args, **kwargs}
    )


@register_model
def cifar_sparse_resnet26(pretrained: bool = False, **kwargs: Any) -> SparseResNet:
    """CIFAR Sparse ResNet-26: 3 stages x 4 units."""
    return _cifar(26, pretrained, kwargs)


@register_model
def cifar_sparse_resnet50(pretrained: bool = False, **kwargs: Any) -> SparseResNet:
    """CIFAR Sparse ResNet-50: 3 stages x 8 units."""
    return _cifar(50, pretrained, kwargs)


@register_model
def cifar_sparse_resnet98(pretrained: bool = False, **kwargs: Any) -> SparseResNet:
    """CIFAR Sparse ResNet-98: 3 stages x 16 units, the paper's depth-nesting base network."""
    return _cifar(98, pretrained, kwargs)


@register_model
def sparse_resnet18(pretrained: bool = False, **kwargs: Any) -> SparseResNet:
    """ImageNet Sparse ResNet-18: 4 stages x 2 units."""
    return _imagenet(18, pretrained, kwargs)


@register_model
def sparse_resnet34(pretrained: bool = False, **kwargs: Any) -> SparseResNet:
    """ImageNet Sparse ResNet-34: 4 stages x 4 units."""
    return _imagenet(34, pretrained, kwargs)


@register_model
def sparse_resnet66(pretrained: bool = False, **kwargs: Any) -> SparseResNet:
    """ImageNet Sparse ResNet-66: 4 stages x 8 units, the paper's ImageNet depth-nesting base."""
    return _imagenet(66, pretrained, kwargs)
