"""Building blocks of the model families: width-nested layers (``nested``), the Sparse ResNet
units, stages and transitions (``sparse_blocks``) and the Sparse body builder (``sparse_body``)."""

from .nested import NestedBatchNorm2d, NestedConv2d
from .sparse_blocks import (
    InterlacedStage,
    LevelTransitions,
    NestedSparseUnit,
    NestedTransition,
    SparseStage,
    SparseUnit,
    Transition,
)
from .sparse_body import SparseBodyMixin

__all__ = [
    "InterlacedStage",
    "LevelTransitions",
    "NestedBatchNorm2d",
    "NestedConv2d",
    "NestedSparseUnit",
    "NestedTransition",
    "SparseBodyMixin",
    "SparseStage",
    "SparseUnit",
    "Transition",
]
