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
