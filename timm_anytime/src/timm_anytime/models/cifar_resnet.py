"""Plain (non-nested) CIFAR ResNets (He et al. 2016, section 4.2): the Oracle networks.

``cifar_resnet{20,42,56}``: a 3x3 stem, three stages of basic blocks (widths 16, 32, 64 times
``width``) and the parameter-free option-A shortcut (subsample, then zero-pad the channels).
Written independently of the nested models, so a nested subnetwork can be checked against it.
"""

from typing import TYPE_CHECKING, Any

import torch
from timm.layers import SelectAdaptivePool2d
from timm.models import register_model
from torch import Tensor, nn
from torch.nn import functional as F

from ..layers.checkpointing import checkpoint_blocks
from ..layers.stochastic_depth import block_drop_paths
from .cfgs import cifar_cfg
from .heads import SingleHeadMixin
from .intermediates import FeatureIntermediatesMixin
from .pretrained import anytime_default_cfgs, build_anytime_model
from .widths import scaled_widths

CIFAR_DEPTHS = {20: 3, 42: 7, 56: 9}  # basic blocks per stage


class CifarBasicBlock(nn.Module):
    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        drop_path: nn.Module | None = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(planes, **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(planes, **dd)
        self.act2 = nn.ReLU(inplace=True)
        self.stride = stride
        self.pad = planes - inplanes  # option A: the shortcut pads the missing channels with zeros
        self.drop_path = drop_path  # stochastic depth of the residual branch (timm's DropPath), or None

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        if self.stride != 1 or self.pad != 0:
            shortcut = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.pad))
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        if self.drop_path is not None:
            x = self.drop_path(x)
        return self.act2(x + shortcut)


class CifarResNet(FeatureIntermediatesMixin, SingleHeadMixin, nn.Module):
    """ResNet for 32x32 inputs: ``depth = 6 * blocks + 2``. ``drop_path_rate``: stochastic depth
    of the residual branches, rising linearly over the blocks to this rate (timm's ResNet rule)."""

    if TYPE_CHECKING:  # added by name: declared for the type checker alone (TorchScript would read a
        # class annotation of a submodule as its type)
        layer1: nn.Sequential
        layer2: nn.Sequential
        layer3: nn.Sequential

    def __init__(
        self,
        blocks_per_stage: int = 3,
        num_classes: int = 10,
        in_chans: int = 3,
        width: float = 1.0,
        channels: tuple = (16, 32, 64),
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        widths = scaled_widths(channels, width)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.drop_path_rate = drop_path_rate
        self.grad_checkpointing = False
        drop_paths = iter(block_drop_paths(drop_path_rate, blocks_per_stage * len(widths)))
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(widths[0], **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.feature_info = [dict(num_chs=widths[0], reduction=1, module="act1")]
        inplanes = widths[0]
        for index, planes in enumerate(widths):
            stride = 1 if index == 0 else 2
            layer = [
                CifarBasicBlock(inplanes if b == 0 else planes, planes, stride if b == 0 else 1, next(drop_paths), **dd)
                for b in range(blocks_per_stage)
            ]
            self.add_module(f"layer{index + 1}", nn.Sequential(*layer))
            self.feature_info.append(dict(num_chs=planes, reduction=2**index, module=f"layer{index + 1}"))
            inplanes = planes
        self.num_features = self.head_hidden_size = inplanes
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        self.fc = nn.Linear(inplanes, num_classes, **dd) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^conv1|bn1", blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_blocks([self.layer1, self.layer2, self.layer3], x)
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


default_cfgs = anytime_default_cfgs({f"cifar_resnet{depth}": cifar_cfg() for depth in CIFAR_DEPTHS})


def _create(depth: int, pretrained: bool, **kwargs: Any) -> CifarResNet:
    return build_anytime_model(
        CifarResNet,
        f"cifar_resnet{depth}",
        pretrained,
        blocks_per_stage=CIFAR_DEPTHS[depth],
        feature_cfg=dict(out_indices=(0, 1, 2, 3)),
        **kwargs,
    )


@register_model
def cifar_resnet20(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-20 (3 basic blocks per stage); ``width`` scales every layer."""
    return _create(20, pretrained, **kwargs)


@register_model
def cifar_resnet42(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-42 (7 basic blocks per stage), the paper's width-nesting base network."""
    return _create(42, pretrained, **kwargs)


@register_model
def cifar_resnet56(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-56 (9 basic blocks per stage); ``width`` scales every layer."""
    return _create(56, pretrained, **kwargs)
