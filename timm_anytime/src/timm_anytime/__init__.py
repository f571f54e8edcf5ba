"""timm-anytime: nested anytime networks as timm models.

``import timm_anytime`` registers the models with timm::

    import timm, timm_anytime
    model = timm.create_model("anytime_cifar_resnet20_w124")
    all_logits = model.forward_stages(x)
"""

import timm

from osgd import OSGD, combine

from .models import (
    AnytimeMixin,
    CifarResNet,
    DepthNestedSparseResNet,
    EANNSparseResNet,
    NestedResNet,
    SparseResNet,
)
from .stripes import StripeSpec

__version__ = "0.1.0"

#: timm registry modules holding this package's models (timm keys them by the module's last name).
MODEL_MODULES = ("width_resnet", "cifar_resnet", "sparse_resnet", "depth_resnet", "width_depth_resnet", "eann")


def list_models(filter: str = "", anytime_only: bool = False) -> list[str]:
    """Names this package registers with timm (``anytime_only``: the multi-stage ones, nested or cascade)."""
    names = timm.list_models(filter or "", module=MODEL_MODULES)
    return [n for n in names if n.startswith(("anytime_", "eann_"))] if anytime_only else names


__all__ = [
    "MODEL_MODULES",
    "OSGD",
    "AnytimeMixin",
    "CifarResNet",
    "DepthNestedSparseResNet",
    "EANNSparseResNet",
    "NestedResNet",
    "SparseResNet",
    "StripeSpec",
    "combine",
    "list_models",
]
