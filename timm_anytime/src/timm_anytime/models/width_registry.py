"""Registered width-nested models: ``anytime_resnet{18,34,50,101}_{w124,e1234}`` (ImageNet layout)
and ``anytime_cifar_resnet{20,42,56}_{w124,e1234}`` (CIFAR layout, option-A shortcuts)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from timm.models import register_model

from ..stripes import StripeSpec
from .cfgs import cifar_cfg, imagenet_cfg
from .cifar_resnet import CIFAR_DEPTHS
from .pretrained import anytime_default_cfgs, build_anytime_model
from .width_resnet import NestedResNet

NESTINGS = ("w124", "e1234")
IMAGENET_ARCHS: dict[int, dict[str, Any]] = {
    18: dict(block="basic", layers=(2, 2, 2, 2)),
    34: dict(block="basic", layers=(3, 4, 6, 3)),
    50: dict(block="bottleneck", layers=(3, 4, 6, 3)),
    101: dict(block="bottleneck", layers=(3, 4, 23, 3)),
}


def _heads(nesting: str) -> tuple[str, ...]:
    return tuple(f"fc.{i}" for i in range(StripeSpec.parse(nesting).num_stages))


MODEL_ARGS: dict[str, dict[str, Any]] = {}
for _depth, _arch in IMAGENET_ARCHS.items():
    for _nesting in NESTINGS:
        MODEL_ARGS[f"anytime_resnet{_depth}_{_nesting}"] = dict(_arch, nesting=_nesting)
for _depth, _blocks in CIFAR_DEPTHS.items():
    for _nesting in NESTINGS:
        MODEL_ARGS[f"anytime_cifar_resnet{_depth}_{_nesting}"] = dict(
            block="basic",
            layers=(_blocks,) * 3,
            nesting=_nesting,
            stem="cifar",
            channels=(16, 32, 64),
            stem_width=16,
            shortcut="zero_pad",
            num_classes=10,
            # As He et al.'s CIFAR ResNet and our plain Oracle (cifar_resnet*): no zero-initialized
            # last BatchNorm. With option-A shortcuts it slows early training badly (docs/models.md).
            zero_init_last=False,
        )


def _cfg(args: dict[str, Any]) -> dict[str, Any]:
    family_cfg = cifar_cfg if args.get("stem") == "cifar" else imagenet_cfg
    return family_cfg(classifier=_heads(args["nesting"]))


default_cfgs = anytime_default_cfgs({name: _cfg(args) for name, args in MODEL_ARGS.items()})


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> NestedResNet:
    args = {**MODEL_ARGS[variant], **kwargs}
    levels = len(args["layers"]) + 1  # the stem, then every stage
    feature_cfg = dict(out_indices=tuple(range(levels)))
    return build_anytime_model(NestedResNet, variant, pretrained, feature_cfg=feature_cfg, **args)


def _entrypoint(variant: str) -> Callable[..., NestedResNet]:
    args = MODEL_ARGS[variant]
    family = "CIFAR" if args.get("stem") == "cifar" else "ImageNet"

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> NestedResNet:
        return _create(variant, pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = variant
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = (
        f"Width-nested {family} ResNet, nesting {args['nesting']!r} "
        f"({StripeSpec.parse(args['nesting']).num_stages} stages); ``width`` scales every layer."
    )
    return entrypoint


for _variant in MODEL_ARGS:
    setattr(sys.modules[__name__], _variant, register_model(_entrypoint(_variant)))
