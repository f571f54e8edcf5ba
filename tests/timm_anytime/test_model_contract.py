"""The AnytimeModel protocol: every registered anytime model has its members, no plain one does."""

from __future__ import annotations

import timm

import timm_anytime
from timm_anytime.models.anytime import AnytimeModel


def test_every_registered_anytime_model_satisfies_the_protocol_and_no_plain_one_does() -> None:
    anytime = set(timm_anytime.list_models(anytime_only=True))
    assert anytime
    for name in timm_anytime.list_models():
        model = timm.create_model(name, num_classes=10)
        assert isinstance(model, AnytimeModel) == (name in anytime), name


def test_set_active_stage_reaches_every_layer_that_has_a_stage() -> None:
    """Every module with ``stage`` and ``num_stages`` (found with ``hasattr``, independently of the
    implementation's instance-dict lookup) holds the chosen stage after each switch, also a layer
    swapped in after construction; width-depth layers hold the stage's width level instead."""
    from timm_anytime.layers.nested import NestedBatchNorm2d, NestedConv2d

    for name in timm_anytime.list_models(anytime_only=True):
        model = timm.create_model(name, num_classes=10)
        width_of = getattr(getattr(model, "schedule", None), "width", None)
        layer = next((m for m in model.modules() if isinstance(m, NestedConv2d)), None)
        for stage in [*range(model.num_stages, 0, -1), model.num_stages]:
            model.set_active_stage(stage)
            if layer is not None and stage == 1:  # a fresh layer, at its default (last) stage
                fresh = NestedConv2d(4, 4, 1, spec=timm_anytime.stripes.StripeSpec.parse("w124"))
                model.add_module("swapped_in", fresh)
                model.set_active_stage(stage)
            for module in model.modules():
                if not (hasattr(module, "stage") and hasattr(module, "num_stages")):
                    continue
                if width_of is not None and isinstance(module, (NestedConv2d, NestedBatchNorm2d)):
                    assert module.stage == width_of(stage), (name, stage, type(module).__name__)
                else:
                    assert module.stage == stage, (name, stage, type(module).__name__)
