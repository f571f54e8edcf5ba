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

from typing import TYPE_CHECKING, Any

from timm.models import register_model
from torch import Tensor, nn

from ..layers.sparse_blocks import SparseStage, Transition
from ..layers.sparse_body import SparseBodyMixin
from .cfgs import cifar_cfg, imagenet_cfg
from .heads import SingleHeadMixin
from .intermediates import FeatureIntermediatesMixin
from .pretrained import anytime_default_cfgs, build_anytime_model
from .widths import scaled_widths


class SparseResNet(FeatureIntermediatesMixin, SparseBodyMixin, SingleHeadMixin, nn.Module):
    """A Sparse ResNet: resolution stages of sparsely aggregated pre-activation units.

    Args:
        units_per_stage: Units in every resolution stage (N).
        channels: Width of each resolution stage, before ``width``.
        stem: ``"cifar"`` (3x3 conv) or ``"imagenet"`` (7x7 stride-2 conv, BN, ReLU, max-pool).
        width: Multiplier on every layer's width.
    """

    if TYPE_CHECKING:  # added by name (_build_head): declared for the type checker alone
        norm: nn.BatchNorm2d

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
        if units_per_stage < 1:
            raise ValueError(f"units_per_stage must be at least 1, got {units_per_stage}")
        dd = {"device": device, "dtype": dtype}
        widths = scaled_widths(channels, width)
        self.num_classes, self.in_chans, self.drop_rate = num_classes, in_chans, drop_rate
        self._build_body(
            widths=widths,
            in_chans=in_chans,
            stem=stem,
            make_stage=lambda c: SparseStage(c, units_per_stage, **dd),
            make_transition=lambda c_in, c: Transition(c_in, c, **dd),
            dd=dd,
        )
        self._build_head("norm", nn.BatchNorm2d(widths[-1], **dd), widths[-1], global_pool, num_classes, dd)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.stage1(self._stem(x))
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
