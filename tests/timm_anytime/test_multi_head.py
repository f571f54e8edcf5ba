"""The per-stage classifier API shared by the Sparse ResNet families (models/multi_head.py)."""

from __future__ import annotations

import pytest
import timm
import torch

import timm_anytime  # noqa: F401

NAMES = ["anytime_cifar_sparse_resnet26_d124", "eann_cifar_sparse_resnet50", "anytime_cifar_sparse_resnet50_wd_sim"]


@pytest.mark.parametrize("name", NAMES)
def test_only_poolings_the_heads_can_read(name: str) -> None:
    """catavgmax doubles the pooled width; the heads read C features, so it is refused up front."""
    with pytest.raises(ValueError, match="global_pool must be one of"):
        timm.create_model(name, global_pool="catavgmax")
    model = timm.create_model(name)
    with pytest.raises(ValueError, match="global_pool must be one of"):
        model.reset_classifier(5, "catavgmax")
    model.reset_classifier(5, "avgmax")
    x = torch.randn(2, 3, 32, 32)
    assert [tuple(y.shape) for y in model.forward_stages(x)] == [(2, 5)] * model.num_stages
    model.reset_classifier(0, "")  # unpooled features, as timm's reset_classifier(0, '') gives
    assert model(x).dim() == 4
