"""``MixinBase``: the base class of the mixins that this package mixes into ``nn.Module`` subclasses.

Type checkers see ``nn.Module``, so a mixin's ``self`` has ``modules()``, ``parameters()`` and the
rest of the module API without a ``# type: ignore`` per call; at run time it is ``object``, so the
mixin adds nothing to the method resolution order and TorchScript sees the class as before.
"""

from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    MixinBase = nn.Module
else:
    MixinBase = object

__all__ = ["MixinBase"]
