"""timm's classifier API for the plain networks: one ``global_pool`` and one ``fc`` head."""

import torch
from timm.layers import SelectAdaptivePool2d
from torch import Tensor, nn
from torch.nn import functional as F


class SingleHeadMixin:
    """``get_classifier``, ``reset_classifier`` and ``forward_head`` over ``self.global_pool`` and
    ``self.fc`` (``self.num_features`` wide), with dropout ``self.drop_rate`` before the head."""

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False):
        return "fc" if name_only else self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        self.num_classes = num_classes
        weight = self.conv1.weight
        self.fc = (
            nn.Linear(self.num_features, num_classes, device=weight.device, dtype=weight.dtype)
            if num_classes > 0
            else nn.Identity()
        )
        self.global_pool.train(self.training)
        self.fc.train(self.training)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.global_pool(x)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)
