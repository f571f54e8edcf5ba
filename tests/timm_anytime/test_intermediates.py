"""timm's ``forward_intermediates`` on every family, against timm's own feature extractors
(``features_only=True``: FeatureListNet runs the children in order, FeatureHookNet hooks them) and
timm's own ``ResNet.forward_intermediates`` on an extracted stage."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import timm_anytime  # noqa: F401  (registers the models)
from timm_anytime.models.intermediates import _called_module

# one model of every family: (name, input size)
FAMILIES = [
    ("cifar_resnet20", 32),
    ("anytime_cifar_resnet20_w124", 32),
    ("anytime_resnet18_w124", 64),
    ("cifar_sparse_resnet26", 32),
    ("sparse_resnet18", 64),
    ("anytime_cifar_sparse_resnet26_d124", 32),
    ("anytime_cifar_sparse_resnet50_wd_alt", 32),
    ("eann_cifar_sparse_resnet50", 32),
]


def _images(size: int, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(size))


def _no_hooks_left(model: nn.Module) -> bool:
    return not any(module._forward_hooks for module in model.modules())


@pytest.mark.parametrize(("name", "size"), FAMILIES)
def test_intermediates_are_timms_features_and_final_features_give_the_logits(name: str, size: int) -> None:
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    features = timm.create_model(name, features_only=True).eval()
    body = getattr(features, "body", features)  # FeatureHookNet wraps the model as .body
    loaded = body.load_state_dict(model.state_dict(), strict=False)  # the extractor has no heads
    assert not loaded.missing_keys
    x = _images(size)
    # each map's value when its module returns it: a later in-place op (an inplace ReLU on a stage
    # output) would change the returned map, and timm's extractors with it
    at_return: dict[int, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = [
        _called_module(modules[info["module"]]).register_forward_hook(
            lambda module, args, out, i=i: at_return.__setitem__(i, out.clone())
        )
        for i, info in enumerate(model.feature_info)
    ]
    with torch.no_grad():
        expected = features(x)
        final, maps = model.forward_intermediates(x)
        for handle in handles:
            handle.remove()
        logits = model(x)
        assert torch.equal(model.forward_head(final), logits)
    assert all(torch.equal(m, at_return[i]) for i, m in enumerate(maps))
    assert len(maps) == len(expected) == len(model.feature_info)
    for got, want, info in zip(maps, expected, model.feature_info, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        assert got.shape[1] == info["num_chs"]
        assert size // got.shape[-1] == info["reduction"]
    assert _no_hooks_left(model)


def _assert_stage_matches_its_extracted_network(model: nn.Module, stage: int, size: int) -> nn.Module:
    """D_stage's final features and maps equal those of ``extract_stage(stage)``; returns the latter."""
    plain = model.extract_stage(stage).eval()
    model.set_active_stage(stage)
    x = _images(size)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        ref_final, ref_maps = plain.forward_intermediates(x)
    torch.testing.assert_close(final, ref_final)
    for got, want in zip(maps, ref_maps, strict=True):
        torch.testing.assert_close(got, want)
    return plain


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_a_width_nested_stage_gives_what_timms_resnet_gives_for_its_extracted_network(stage: int) -> None:
    """The reference is timm's own ResNet.forward_intermediates on D_stage as a plain network."""
    torch.manual_seed(0)
    model = timm.create_model("anytime_resnet18_w124").eval()
    plain = _assert_stage_matches_its_extracted_network(model, stage, 64)
    assert type(plain) is timm.models.resnet.ResNet


@pytest.mark.parametrize("stage", [1, 2])
def test_a_depth_nested_stage_gives_its_extracted_networks_maps(stage: int) -> None:
    torch.manual_seed(0)
    model = timm.create_model("anytime_cifar_sparse_resnet26_d124").eval()
    _assert_stage_matches_its_extracted_network(model, stage, 32)


def test_indices_stop_early_and_intermediates_only_follow_timm() -> None:
    model = timm.create_model("anytime_cifar_sparse_resnet26_d124").eval()
    x = _images(32)
    with torch.no_grad():
        _, every = model.forward_intermediates(x)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        chosen = model.forward_intermediates(x, indices=[0, -2], intermediates_only=True)
        final, early = model.forward_intermediates(x, indices=[1], stop_early=True)
    assert [m.shape for m in last_two] == [m.shape for m in every[2:]]
    assert all(torch.equal(a, b) for a, b in zip(last_two, every[2:], strict=True))
    assert torch.equal(chosen[0], every[0])
    assert torch.equal(chosen[1], every[2])
    assert torch.equal(early[0], every[1])
    assert final is early[0]
    with pytest.raises(AssertionError, match="out of range"):
        model.forward_intermediates(x, indices=5)
    with pytest.raises(ValueError, match="NCHW"):
        model.forward_intermediates(x, output_fmt="NHWC")
    assert _no_hooks_left(model)


@pytest.mark.parametrize("name", ["anytime_cifar_resnet20_w124", "anytime_cifar_sparse_resnet26_d124"])
def test_gradient_checkpointing_keeps_the_maps_and_their_gradients(name: str) -> None:
    torch.manual_seed(0)
    model = timm.create_model(name).train()
    x = _images(32)
    reference = [m.detach() for m in model.forward_intermediates(x, intermediates_only=True)]
    model.set_grad_checkpointing(True)
    maps = model.forward_intermediates(x, intermediates_only=True)
    for got, want in zip(maps, reference, strict=True):
        torch.testing.assert_close(got, want)
    maps[2].square().sum().backward()  # a map inside a checkpointed segment
    assert model.conv1.weight.grad is not None
    assert model.conv1.weight.grad.abs().sum() > 0


def test_maps_an_early_exit_never_computes_are_refused_by_name() -> None:
    model = timm.create_model("eann_cifar_sparse_resnet50").eval()
    x = _images(32)
    model.set_active_stage(1)  # exits after unit 3 of the first resolution stage
    with torch.no_grad():
        (stem,) = model.forward_intermediates(x, indices=[0], intermediates_only=True)
        with pytest.raises(ValueError, match=r"\[1, 2, 3\].*set_active_stage"):
            model.forward_intermediates(x)
    assert stem.shape == (2, 16, 32, 32)
    assert _no_hooks_left(model)


def test_timms_getter_feature_extractor_works_through_forward_intermediates() -> None:
    name = "anytime_cifar_sparse_resnet26_d124"
    getter = timm.create_model(name, features_only=True, feature_cls="getter", out_indices=(1, 3)).eval()
    model = timm.create_model(name).eval()
    model.load_state_dict(getter.model.state_dict())
    x = _images(32)
    with torch.no_grad():
        got = getter(x)
        _, every = model.forward_intermediates(x)
    assert getter.feature_info.channels() == [16, 64]
    assert torch.equal(got[0], every[1])
    assert torch.equal(got[1], every[3])


def test_every_model_class_has_it_and_is_tested_here() -> None:
    from timm_anytime import models
    from timm_anytime.models.intermediates import FeatureIntermediatesMixin

    classes = {getattr(models, n) for n in models.__all__ if isinstance(getattr(models, n), type)}
    classes = {c for c in classes if issubclass(c, nn.Module)}
    assert classes
    assert all(issubclass(c, FeatureIntermediatesMixin) for c in classes)
    tested = {type(timm.create_model(name)) for name, _ in FAMILIES}
    assert classes == tested
