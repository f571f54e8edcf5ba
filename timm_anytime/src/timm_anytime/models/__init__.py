"""Model families; importing this package registers them with timm."""

from . import cifar_resnet, depth_resnet, eann, sparse_resnet, width_registry  # noqa: F401  (registration side effects)
from .anytime import AnytimeMixin, num_stages_of, stage_logits
from .cifar_resnet import CifarResNet
from .depth_resnet import DepthNestedSparseResNet
from .eann import EANNSparseResNet
from .sparse_resnet import SparseResNet
from .width_resnet import NestedResNet

__all__ = [
    "AnytimeMixin",
    "CifarResNet",
    "DepthNestedSparseResNet",
    "EANNSparseResNet",
    "NestedResNet",
    "SparseResNet",
    "num_stages_of",
    "stage_logits",
]
