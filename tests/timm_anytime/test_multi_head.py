"""The per-stage classifier API shared by the Sparse ResNet families (models/heads.py)."""

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


@pytest.mark.parametrize("name", NAMES)
def test_grad_checkpointing_recomputes_units_with_equal_gradients(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = timm.create_model(name, width=0.5).train()
    x = torch.randn(4, 3, 32, 32)

    after: list[dict[str, torch.Tensor]] = []

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad()
        state = {k: v.clone() for k, v in model.state_dict().items()}  # BN statistics move: restore them
        sum(y.square().mean() for y in model.forward_stages(x)).backward()
        after.append({k: v.clone() for k, v in model.state_dict().items()})
        model.load_state_dict(state)
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = gradients()
    calls = []
    original = torch.utils.checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    model.set_grad_checkpointing(True)
    checkpointed = gradients()
    assert len(calls) >= sum(1 for n, _ in model.named_modules() if n.count(".units.") == 1 and n.count(".") == 2)
    for n, grad in plain.items():
        torch.testing.assert_close(checkpointed[n], grad, rtol=1e-5, atol=1e-6)
    # the recomputation left BatchNorm's running statistics and batch counts as one forward set them
    for key, value in after[0].items():
        torch.testing.assert_close(after[1][key], value, rtol=1e-5, atol=1e-6, msg=key)
