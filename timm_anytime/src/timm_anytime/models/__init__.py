"""Model families; importing this package registers them with timm."""

from . import (  # noqa: F401  (registration side effects)
    cifar_resnet,
    depth_resnet,
    eann,
    sparse_resnet,
    width_depth_resnet,
    width_resnet,
)
from .anytime import AnytimeMixin, num_stages_of, stage_logits
from .cifar_resnet import CifarResNet
from .depth_resnet import DepthNestedSparseResNet
from .eann import EANNSparseResNet
from .sparse_resnet import SparseResNet
from .width_depth_resnet import WidthDepthNestedSparseResNet
from .width_resnet import NestedResNet

__all__ = [
    "AnytimeMixin",
    "CifarResNet",
    "DepthNestedSparseResNet",
    "EANNSparseResNet",
    "NestedResNet",
    "SparseResNet",
    "WidthDepthNestedSparseResNet",
    "num_stages_of",
    "stage_logits",
]
