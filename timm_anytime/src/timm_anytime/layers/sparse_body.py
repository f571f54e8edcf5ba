"""One builder for the body of every Sparse ResNet family (SPEC section 4).

A Sparse ResNet body is a stem (``conv1``; the ImageNet stem adds ``bn1``, ``act1``, ``maxpool``),
then resolution stages ``stage1, stage2, ...`` with ``transition1, transition2, ...`` between them,
then per-head final norms (``norm`` or ``norms``), ``act``, ``global_pool`` and ``fc``. The plain,
EANN, depth-nested and width-depth-nested families differ only in the stage and transition modules
(and the stem convolution), which they pass as factories to :meth:`SparseBodyMixin._build_body`.
"""

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from timm.layers import SelectAdaptivePool2d
from torch import Tensor, nn

from ..mixin_base import MixinBase
from .nested import init_conv_weights

STEMS = ("cifar", "imagenet")


class SparseBodyMixin(MixinBase):
    """The body builder, stem forward and timm's layer-grouping and gradient-checkpointing API
    shared by every Sparse ResNet family (mixed into an ``nn.Module``)."""

    if TYPE_CHECKING:  # declared for the type checker alone: TorchScript reads a class annotation
        # of an attribute as its type (a submodule's; drop_rate=0 would not be a float). The
        # family's __init__ sets the numbers; the body modules are added by name (add_module).
        in_chans: int
        num_classes: int
        drop_rate: float
        conv1: nn.Conv2d
        fc: Any  # the head mixin's: one classifier, or a ModuleList of them
        act: nn.Module
        bn1: nn.Module
        act1: nn.Module
        maxpool: nn.Module
        stage1: nn.Module
        stage2: nn.Module
        stage3: nn.Module
        stage4: nn.Module
        transition1: nn.Module
        transition2: nn.Module
        transition3: nn.Module

        def check_pool(self, global_pool: str) -> None: ...  # the classifier mixin's (models.heads)

        def _make_heads(self, num_classes: int, dd: dict) -> nn.Module: ...

    def _build_body(
        self,
        *,
        widths: list[int],
        in_chans: int,
        stem: str,
        make_stage: Callable[[int], nn.Module],
        make_transition: Callable[[int, int], nn.Module],
        stem_conv: Callable[..., nn.Conv2d] = nn.Conv2d,
        feature_module: str = "stage{}",
        dd: dict[str, Any],
    ) -> None:
        """Add the stem, ``stage{i}`` = ``make_stage(width_i)`` and ``transition{i}`` =
        ``make_transition(width_(i-1), width_i)``, and timm's ``feature_info`` (each stage's
        output module named by ``feature_module``). ``stem_conv(in, out, kernel, stride, padding,
        bias=False, **dd)`` builds the stem convolution."""
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}: use 'cifar' or 'imagenet'")
        self.grad_checkpointing = False
        self.num_resolution_stages = len(widths)
        if stem == "imagenet":
            self.conv1 = stem_conv(in_chans, widths[0], 7, 2, 3, bias=False, **dd)
            self.bn1 = nn.BatchNorm2d(widths[0], **dd)
            self.act1 = nn.ReLU()
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            reduction, stem_module = 4, "maxpool"
        else:
            self.conv1 = stem_conv(in_chans, widths[0], 3, 1, 1, bias=False, **dd)
            reduction, stem_module = 1, "conv1"
        self.feature_info = [dict(num_chs=widths[0], reduction=reduction, module=stem_module)]
        for index, channels in enumerate(widths):
            if index > 0:
                self.add_module(f"transition{index}", make_transition(widths[index - 1], channels))
                reduction *= 2
            self.add_module(f"stage{index + 1}", make_stage(channels))
            self.feature_info.append(
                dict(num_chs=channels, reduction=reduction, module=feature_module.format(index + 1))
            )

    def _build_head(
        self,
        norm_name: str,
        norms: nn.Module,
        num_features: int,
        global_pool: str,
        num_classes: int,
        dd: dict[str, Any],
    ) -> None:
        """Add the final norm(s) under ``norm_name``, ``act``, ``global_pool`` and the classifier(s)
        (``self._make_heads``); every convolution gets timm's ResNet init (Kaiming normal,
        fan-out), with a width-nested convolution's structural zeros kept."""
        self.add_module(norm_name, norms)
        self.act = nn.ReLU()
        self.num_features = self.head_hidden_size = num_features
        self.check_pool(global_pool)
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        self.fc = self._make_heads(num_classes, dd)
        init_conv_weights(self)

    def _stem(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        if hasattr(self, "maxpool"):  # the ImageNet stem
            x = self.maxpool(self.act1(self.bn1(x)))
        return x

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        units = r"^stage(\d+)" if coarse else r"^stage(\d+)\.units\.(\d+)"
        # A transition follows every unit of the stage before it; the final norm(s) come last.
        blocks = [(units, None), (r"^transition(\d+)", (99999,)), (r"^norm", (99999,))]
        return dict(stem=r"^conv1|bn1|maxpool", blocks=blocks)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every unit in the backward pass instead of storing its activations."""
        for module in self.modules():
            if hasattr(module, "grad_checkpointing"):
                setattr(module, "grad_checkpointing", enable)  # noqa: B010 (a plain attribute, not a Tensor | Module)


class InterlacedBodyMixin(SparseBodyMixin):
    """What the depth-interlaced bodies (depth- and width-depth-nested) add: the level-wise forward
    and each body module's depth level."""

    if TYPE_CHECKING:  # set by the family's __init__ (declared for the type checker alone)
        units_per_stage: int  # of the full network
        levels: int  # depth levels

    def _level_outputs(self, x: Tensor, active: int) -> list[Tensor]:
        """Every depth level's (<= ``active``) output of the last resolution stage, before its
        head's norm; units of deeper levels are not run."""
        stem = self._stem(x)
        inputs: list[Tensor] = []
        for _ in range(active):
            inputs.append(stem)
        outputs = self.stage1(inputs)
        outputs = self.stage2(self.transition1(outputs))
        outputs = self.stage3(self.transition2(outputs))
        if hasattr(self, "stage4"):
            outputs = self.stage4(self.transition3(outputs))
        return outputs

    @torch.jit.ignore
    def _level_modules(self) -> Iterator[tuple[int, nn.Module]]:
        """(depth level, module) for every body module: the stem is level 1, a unit and a
        transition belong to their level."""
        yield 1, self.conv1
        if hasattr(self, "bn1"):
            yield 1, self.bn1
        for r in range(self.num_resolution_stages):
            stage = getattr(self, f"stage{r + 1}")
            for unit, level in zip(stage.units, stage.level_of, strict=True):
                yield level, unit
            if r > 0:
                for level, transition in enumerate(getattr(self, f"transition{r}").levels, start=1):
                    yield level, transition


def interlaced_key(model: nn.Module, key: str, depth: int) -> str | None:
    """Where state-dict ``key`` of an interlaced (depth-nested) Sparse body goes in the network of
    its first ``depth`` levels (None: not in it). Units renumber in order; per-level transitions,
    norms and heads (``fc``) keep levels < ``depth``; for depth 1 the per-level lists collapse to
    the plain names (``transitionR.*``, ``norm``, ``fc``)."""
    parts = key.split(".")
    if parts[0].startswith("stage") and parts[1] == "units":
        level_of = getattr(model, parts[0]).level_of
        index = int(parts[2])
        if level_of[index] > depth:
            return None
        parts[2] = str(sum(1 for lv in level_of[:index] if lv <= depth))  # its place in D_depth
    elif parts[0].startswith("transition"):  # transitionR.levels.<level - 1>.*
        if int(parts[2]) >= depth:
            return None
        if depth == 1:
            parts = [parts[0], *parts[3:]]
    elif parts[0] in ("norms", "fc") and parts[1].isdigit():
        if int(parts[1]) >= depth:
            return None
        if depth == 1:
            parts = ["norm" if parts[0] == "norms" else "fc", *parts[2:]]
    return ".".join(parts)
