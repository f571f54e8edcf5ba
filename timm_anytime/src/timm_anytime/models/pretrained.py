"""Pretrained anytime checkpoints: the tags this package ships, and clear errors when loading weights.

Every shipped checkpoint is the exact folder ``anytime-push --dry-run`` wrote (``config.json``,
``model.safetensors``, the model card ``README.md``), kept under ``timm_anytime/pretrained/`` as
package data. Its ``pretrained_cfg`` tag names the Hub repository it is published as
(``hf_hub_id``) and points ``file`` at the shipped copy, so ``pretrained=True`` works offline
(timm prefers ``file`` over ``hf_hub_id``).

Every model family builds through :func:`build_anytime_model`, which checks a checkpoint's keys and
shapes against the model before timm loads it (``pretrained=True``, ``hf-hub:``, ``local-dir:``),
and turns an unreadable safetensors file into an error that says what to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from safetensors import SafetensorError
from timm.models import PretrainedCfg, build_model_with_cfg, generate_default_cfgs
from torch import Tensor, nn

HUB_ORG = "timm-anytime"
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "pretrained"

#: ``architecture.tag`` of every checkpoint shipped in WEIGHTS_DIR (see docs/hub.md). The first
#: tag of an architecture is its default (``pretrained=True`` without a tag), as in timm: the
#: checkpoint with the best last stage comes first (an earlier stage may be better in another tag:
#: docs/hub.md's table).
SHIPPED: tuple[str, ...] = (
    "anytime_cifar_resnet20_w124.osgd_cutout_cifar10_e200",
    "anytime_cifar_resnet20_w124.osgd_cifar10_e100",
    "anytime_cifar_sparse_resnet26_d124.osgd_cutout_cifar10_e200",
    "anytime_cifar_sparse_resnet26_d124.osgd_cifar10_e100",
)


#: The run's ``config.yaml`` as a checkpoint folder written by ``anytime-push`` (and every shipped
#: one) carries it, beside ``model.safetensors`` and ``eval.json``.
EXPORTED_TRAIN_CONFIG = "train_config.yaml"


def shipped_train_config(name: str) -> dict[str, Any]:
    """The training settings (its ``train_config.yaml``) of the shipped checkpoint ``name``
    (``architecture.tag``, one of :data:`SHIPPED`), for example which images it trained on
    (``train_per_class``: None means all)."""
    if name not in SHIPPED:
        raise ValueError(f"{name!r} is not a shipped checkpoint; shipped: {', '.join(SHIPPED)}")
    return yaml.safe_load((WEIGHTS_DIR / name / EXPORTED_TRAIN_CONFIG).read_text())


class PretrainedWeightsError(ValueError):
    """A checkpoint that cannot be loaded into the model it is meant for."""


def with_pretrained_tags(cfgs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any] | PretrainedCfg]:
    """``cfgs`` with a tagged ``pretrained_cfg`` for every shipped checkpoint of these architectures,
    in :data:`SHIPPED` order. As in timm, an architecture with weights keeps no untagged entry: it
    would be listed by ``timm.list_pretrained`` beside its tags, as a checkpoint of its own."""
    out: dict[str, dict[str, Any] | PretrainedCfg] = dict(cfgs)
    for name in SHIPPED:
        architecture = name.split(".", 1)[0]
        if architecture in cfgs:
            file = WEIGHTS_DIR / name / "model.safetensors"
            out.pop(architecture, None)
            out[name] = {**cfgs[architecture], "hf_hub_id": f"{HUB_ORG}/{name}", "file": str(file)}
    return out


def anytime_default_cfgs(cfgs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """timm's ``generate_default_cfgs`` over ``cfgs`` and the shipped checkpoints' tags. A tag with
    weights becomes its architecture's default, as in timm."""
    return generate_default_cfgs(with_pretrained_tags(cfgs))


def check_checkpoint(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Raise :class:`PretrainedWeightsError` unless ``state_dict`` has the model's keys and shapes.
    The classifiers may differ or be absent, and the first convolution's input channels may differ:
    timm's ``load_pretrained`` adapts those itself (``num_classes``, ``in_chans``)."""
    expected = model.state_dict()
    cfg = getattr(model, "pretrained_cfg", None) or {}
    classifiers = cfg.get("classifier") or ()
    classifiers = tuple(classifiers if isinstance(classifiers, (list, tuple)) else (classifiers,))
    first_conv = cfg.get("first_conv") or "conv1"

    def ours(key: str) -> bool:  # not a classifier key: timm drops or resizes those itself
        return not any(key == c or key.startswith(c + ".") for c in classifiers)

    missing = sorted(k for k in set(expected) - set(state_dict) if ours(k))
    unexpected = sorted(k for k in set(state_dict) - set(expected) if ours(k))
    wrong = [
        f"{key} {tuple(state_dict[key].shape)} vs {tuple(expected[key].shape)}"
        for key in sorted(set(expected) & set(state_dict))
        if state_dict[key].shape != expected[key].shape and ours(key) and not key.startswith(first_conv + ".")
    ]
    if missing or unexpected or wrong:
        name = cfg.get("architecture", type(model).__name__)

        def some(items: list[str]) -> str:
            return ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")

        problems = [
            f"{label}: {some(items)}"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if items
        ]
        raise PretrainedWeightsError(
            f"these weights do not fit {name} ({'; '.join(problems)}). They were "
            "saved from another architecture or other model arguments: check 'architecture' and 'model_args' "
            "in the checkpoint's config.json, or pass the arguments it was trained with."
        )
    return state_dict


ModelT = TypeVar("ModelT", bound=nn.Module)


def build_anytime_model(model_cls: type[ModelT], variant: str, pretrained: bool, **kwargs: Any) -> ModelT:
    """timm's ``build_model_with_cfg`` with the checkpoint checked before it is loaded (typed as
    timm types it: the class, although ``features_only`` returns timm's feature wrapper)."""
    try:
        return build_model_with_cfg(model_cls, variant, pretrained, pretrained_filter_fn=check_checkpoint, **kwargs)
    except SafetensorError as error:
        raise PretrainedWeightsError(
            f"the pretrained weights of {variant} are not a readable safetensors file ({error}); the file is "
            "truncated or corrupt. Delete it (for hf-hub: the model's folder in the Hugging Face cache) and "
            "download or export it again."
        ) from error


def hook_feature_cfg(resolution_stages: int) -> dict[str, Any]:
    """timm's ``feature_cfg`` for a depth-interlaced body: feature maps come from forward hooks
    (a stage's output exists only inside the level-wise forward), the stem and every stage. The hooks
    go on the model as built: timm's FeatureHookNet does not rewrite it unless ``flatten_sequential``
    is asked for. No ``no_rewrite`` key: timm before 1.0.31 passes it to any ``feature_cls`` a user
    chooses instead, and its FeatureGetterNet raised TypeError on it."""
    return dict(feature_cls="hook", out_indices=tuple(range(resolution_stages + 1)))
