"""timm's classifier API (``get_classifier``, ``reset_classifier``, ``forward_head``) for every family.

* ``SingleHeadMixin``: the plain networks, one ``global_pool`` and one ``fc``.
* ``MultiHeadMixin``: every anytime model: ``self.fc`` is a ModuleList of per-stage classifiers,
  the active stage's in use.
* ``NormedHeadsMixin``: what the Sparse ResNet families add: each head is BN (``self.norms``)-ReLU-
  pool-Linear.

A model implements ``_make_heads(num_classes, dd)`` (the classifier or the ModuleList of them);
``reset_classifier`` rebuilds it.
"""

from typing import TYPE_CHECKING, Any

import torch
from timm.layers import SelectAdaptivePool2d
from torch import Tensor, nn
from torch.nn import functional as F

from ..mixin_base import MixinBase


class ClassifierMixin(MixinBase):
    """``check_pool`` and ``reset_classifier`` over ``self.global_pool`` and ``self.fc``."""

    #: the ``global_pool`` values the classifier can read (None: any of timm's)
    pool_types: tuple[str, ...] | None = None
    if TYPE_CHECKING:  # what the model provides (declared for the type checker alone: TorchScript
        # reads a class annotation of a submodule as its type, so none may exist at run time)
        conv1: nn.Conv2d
        global_pool: SelectAdaptivePool2d
        fc: nn.Module
        num_classes: int
        drop_rate: float
        pretrained_cfg: dict[str, Any]  # set by timm's model builder

        def _make_heads(self, num_classes: int, dd: dict) -> nn.Module: ...

    def check_pool(self, global_pool: str) -> None:
        """Refuse a pooling whose output width the classifier cannot read."""
        if self.pool_types is not None and global_pool not in self.pool_types:
            raise ValueError(f"global_pool must be one of {self.pool_types} for this network, got {global_pool!r}")

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier(s) (``num_classes=0``: removed, pooled features returned)."""
        if global_pool is not None:
            self.check_pool(global_pool)
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        self.num_classes = num_classes
        weight = self.conv1.weight
        self.fc = self._make_heads(num_classes, {"device": weight.device, "dtype": weight.dtype})
        self.global_pool.train(self.training)
        self.fc.train(self.training)


class SingleHeadMixin(ClassifierMixin):
    """One classifier ``self.fc`` (``self.num_features`` wide), with dropout ``self.drop_rate`` before it."""

    if TYPE_CHECKING:
        num_features: int

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False):
        return "fc" if name_only else self.fc

    def _make_heads(self, num_classes: int, dd: dict) -> nn.Module:
        return nn.Linear(self.num_features, num_classes, **dd) if num_classes > 0 else nn.Identity()

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.global_pool(x)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)


class MultiHeadMixin(ClassifierMixin):
    """``get_classifier``, ``reset_classifier`` and ``forward_head`` over ``self.fc[stage - 1]``.

    A subclass sets ``pool_types`` (the ``global_pool`` values its heads accept) and implements
    ``_make_heads(num_classes, dd) -> nn.ModuleList``.
    """

    pool_types: tuple[str, ...] | None = ("avg", "max", "")  # catavgmax would change the feature width the heads read
    if TYPE_CHECKING:
        fc: nn.ModuleList
        stage: int

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False):
        """The active stage's classifier (``fc.<stage - 1>``)."""
        return f"fc.{self.stage - 1}" if name_only else self.fc[self.stage - 1]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.global_pool(x)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        if pre_logits:
            return x
        out = x
        for index, head in enumerate(self.fc):
            if index == self.stage - 1:
                out = head(x)
        return out

    def _check_pooled(self, forward: str) -> None:
        """Refuse to run ``forward`` (an anytime forward, which pools inside) without pooling."""
        if self.global_pool.is_identity():
            raise RuntimeError(f"{forward} needs pooled heads; reset_classifier with global_pool='avg'")


class NormedHeadsMixin(MultiHeadMixin):
    """Heads of BN (``self.norms[i]``)-ReLU (``self.act``)-pool-Linear (``self.fc[i]``), indexed
    from 0. A subclass implements ``_head_input(x, index)``: the features head ``index`` reads."""

    pool_types = ("avg", "max", "avgmax", "")  # heads read C features: no catavgmax (2C)
    if TYPE_CHECKING:
        norms: nn.ModuleList
        act: nn.Module

        def check_stage(self, stage: int) -> int: ...

    @torch.jit.ignore
    def heads(self) -> list[nn.Module]:
        """Stage k's own head: its final BatchNorm and its classifier."""
        return [nn.ModuleList([norm, fc]) for norm, fc in zip(self.norms, self.fc, strict=True)]

    def _head_norm(self, x: Tensor, index: int) -> Tensor:
        """BN-ReLU of head ``index`` (a loop, so that TorchScript can select the module)."""
        out = x
        for i, norm in enumerate(self.norms):
            if i == index:
                out = self.act(norm(x))
        return out

    def _logits(self, features: Tensor, index: int) -> Tensor:
        pooled = self.global_pool(self.act(self.norms[index](features)))
        if self.drop_rate > 0.0:
            pooled = F.dropout(pooled, p=self.drop_rate, training=self.training)
        return self.fc[index](pooled)

    @torch.jit.ignore
    def head_flops(self, stage: int, x: Tensor) -> int:
        """FLOPs of stage ``stage``'s head (BN-ReLU-pool-Linear) for input ``x``."""
        from torch.utils.flop_counter import FlopCounterMode

        index = self.check_stage(stage) - 1
        with torch.no_grad():
            features = torch.zeros_like(self._head_input(x, index))
            with FlopCounterMode(display=False) as counter:
                self._logits(features, index)
        return counter.get_total_flops()

    def _head_input(self, x: Tensor, index: int) -> Tensor:
        raise NotImplementedError
