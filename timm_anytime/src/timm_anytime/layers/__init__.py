"""Building blocks of nested networks."""

from .nested import NestedBatchNorm2d, NestedConv2d

__all__ = ["NestedBatchNorm2d", "NestedConv2d"]
