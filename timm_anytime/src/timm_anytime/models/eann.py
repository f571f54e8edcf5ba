"""The EANN cascade baseline (Hu et al. 2019, SPEC section 6): exits on a plain Sparse ResNet.

An ordinary Sparse ResNet with exit heads after the units k * 2^i of all its T units (numbered
across the resolution stages), so the exits cost about 1 : 2 : 4 : 8. An exit reads the aggregate
that would feed the next unit (at the end of a resolution stage: the stage output), through
BN-ReLU-global pool-Linear. Stage k is the network up to exit k; its loss weighting is AdaLoss
(``timm_anytime.adaloss``, the trainer's ``--method adaloss``).
"""

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import torch
from timm.models import register_model
from torch import Tensor, nn

from ..layers.checkpointing import checkpointed
from ..layers.sparse_blocks import SparseStage, Transition
from ..layers.sparse_body import SparseBodyMixin
from .anytime import AnytimeMixin, keep_rows
from .cfgs import cifar_cfg
from .heads import NormedHeadsMixin
from .intermediates import FeatureIntermediatesMixin
from .pretrained import anytime_default_cfgs, build_anytime_model
from .widths import scaled_widths


def exit_units(total_units: int, num_exits: int) -> list[int]:
    """Exits after units T / 2^(num_exits - 1), ..., T / 2, T (1-based, across resolution stages)."""
    if num_exits < 1 or total_units % 2 ** (num_exits - 1):
        raise ValueError(f"{num_exits} exits need a unit count divisible by 2^{num_exits - 1}, got {total_units} units")
    return [total_units // 2 ** (num_exits - 1 - i) for i in range(num_exits)]


class EANNSparseResNet(FeatureIntermediatesMixin, SparseBodyMixin, NormedHeadsMixin, AnytimeMixin, nn.Module):
    """A CIFAR Sparse ResNet with ``num_exits`` cascade exits (stage k: the network up to exit k).

    Args:
        units_per_stage: Units in each of the 3 resolution stages.
        num_exits: Exits (anytime stages); exit i follows unit T / 2^(num_exits - i) of T units.
        channels: Width of each resolution stage, before ``width``.
        width: Multiplier on every layer's width.
    """

    exit_resolution: list[int]
    exit_position: list[int]
    if TYPE_CHECKING:  # submodules, added by name: declared for the type checker alone (TorchScript
        # would read a class annotation of a submodule as its type)
        stage1: SparseStage
        stage2: SparseStage
        stage3: SparseStage

    def __init__(
        self,
        units_per_stage: int = 16,
        num_exits: int = 4,
        channels: tuple = (16, 32, 64),
        num_classes: int = 10,
        in_chans: int = 3,
        width: float = 1.0,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if len(channels) != 3:
            raise ValueError(f"the CIFAR layout has 3 resolution stages, got channels={channels}")
        dd = {"device": device, "dtype": dtype}
        widths = scaled_widths(channels, width)
        self.exits = exit_units(3 * units_per_stage, num_exits)
        self.units_per_stage = units_per_stage
        self.num_classes, self.in_chans, self.drop_rate = num_classes, in_chans, drop_rate
        self.num_stages = self.stage = num_exits
        # Exit after global unit u: resolution stage (u - 1) // N, having run its first ((u - 1) % N) + 1 units.
        self.exit_resolution = [(u - 1) // units_per_stage for u in self.exits]
        self.exit_position = [(u - 1) % units_per_stage + 1 for u in self.exits]
        self._build_body(
            widths=widths,
            in_chans=in_chans,
            stem="cifar",
            make_stage=lambda c: SparseStage(c, units_per_stage, **dd),
            make_transition=lambda c_in, c: Transition(c_in, c, **dd),
            dd=dd,
        )
        self.exit_channels = [widths[r] for r in self.exit_resolution]
        norms = nn.ModuleList(nn.BatchNorm2d(c, **dd) for c in self.exit_channels)
        self._build_head("norms", norms, widths[-1], global_pool, num_classes, dd)

    def _make_heads(self, num_classes: int, dd: dict[str, Any]) -> nn.ModuleList:
        if num_classes <= 0:
            return nn.ModuleList(nn.Identity() for _ in self.exits)
        return nn.ModuleList(nn.Linear(c, num_classes, **dd) for c in self.exit_channels)

    # ------------------------------------------------------------------ anytime bookkeeping
    @torch.jit.ignore
    def _owner_of_unit(self, unit: int) -> int:
        return next(k for k, last in enumerate(self.exits, start=1) if unit <= last)

    @torch.jit.ignore
    def element_stages(self) -> dict[nn.Parameter, Tensor]:
        """Whole tensors: a unit (and the transition before it) belongs to the first exit after it."""
        owners: dict[nn.Parameter, Tensor] = {p: torch.ones_like(p, dtype=torch.long) for p in self.conv1.parameters()}
        n = self.units_per_stage
        for r in range(3):
            for index, unit in enumerate(getattr(self, f"stage{r + 1}").units):
                stage = self._owner_of_unit(r * n + index + 1)
                owners.update({p: torch.full_like(p, stage, dtype=torch.long) for p in unit.parameters()})
            if r > 0:
                stage = self._owner_of_unit(r * n + 1)
                transition = getattr(self, f"transition{r}")
                owners.update({p: torch.full_like(p, stage, dtype=torch.long) for p in transition.parameters()})
        return owners

    # ------------------------------------------------------------------ timm model API

    def _exit_features(self, x: Tensor, exit_index: int) -> Tensor:
        """The aggregate that exit ``exit_index`` (0-based) reads, running only the units before it."""
        resolution, position = self.exit_resolution[exit_index], self.exit_position[exit_index]
        n = self.units_per_stage
        # A whole stage runs through __call__, so forward hooks (timm's features, forward_intermediates) see it.
        units = position if resolution == 0 else n
        h = self.conv1(x)
        h = self.stage1(h) if units == n else self.stage1.forward_until(h, units)
        if resolution >= 1:
            units = position if resolution == 1 else n
            h = self.transition1(h)
            h = self.stage2(h) if units == n else self.stage2.forward_until(h, units)
        if resolution >= 2:
            h = self.transition2(h)
            h = self.stage3(h) if position == n else self.stage3.forward_until(h, position)
        return h

    def forward_features(self, x: Tensor) -> Tensor:
        """The active exit's features (after its BN-ReLU), running only the units before it."""
        return self._head_norm(self._exit_features(x, self.stage - 1), self.stage - 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    # ------------------------------------------------------------------ anytime API
    def _head_input(self, x: Tensor, index: int) -> Tensor:
        return self._exit_features(x, index)

    @torch.jit.ignore
    def forward_anytime(self, x: Tensor) -> Generator[Tensor, Tensor | None, None]:
        """Yield every exit's logits in order, running each unit once; ``send(rows)`` after an
        exit continues with those inputs only."""
        self._check_pooled("forward_anytime")
        pending = list(enumerate(self.exits))
        h = self.conv1(x)
        n = self.units_per_stage
        for r in range(3):
            stage = getattr(self, f"stage{r + 1}")
            if r > 0:
                h = getattr(self, f"transition{r}")(h)
            outputs = [h]
            for index, unit in enumerate(stage.units):
                aggregate = stage._aggregate(outputs, index)
                if stage.grad_checkpointing:
                    outputs.append(checkpointed(unit, aggregate))
                else:
                    outputs.append(unit(aggregate))
                while pending and pending[0][1] == r * n + index + 1:
                    rows = yield self._logits(stage._aggregate(outputs, index + 1), pending.pop(0)[0])
                    outputs = keep_rows(outputs, rows)  # continue with these inputs only
            h = stage._aggregate(outputs, n)

    @torch.jit.ignore
    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """Every exit's logits from one pass of the whole network (for training)."""
        return list(self.forward_anytime(x))

    @torch.jit.ignore
    def extract_stage(self, stage: int) -> nn.Module:
        raise NotImplementedError(
            "a cascade's stage k is the network up to exit k, not a smaller standalone network; "
            "use set_active_stage(k) to run it alone at its own cost"
        )


default_cfgs = anytime_default_cfgs(
    {
        "eann_cifar_sparse_resnet98": cifar_cfg(classifier=tuple(f"fc.{i}" for i in range(4))),
        "eann_cifar_sparse_resnet50": cifar_cfg(classifier=tuple(f"fc.{i}" for i in range(4))),
    }
)


def _create(variant: str, pretrained: bool, units: int, **kwargs: Any) -> EANNSparseResNet:
    args = dict(units_per_stage=units, num_exits=4, channels=(16, 32, 64), num_classes=10)
    feature_cfg = dict(out_indices=(0, 1, 2, 3))
    return build_anytime_model(EANNSparseResNet, variant, pretrained, feature_cfg=feature_cfg, **{**args, **kwargs})


@register_model
def eann_cifar_sparse_resnet98(pretrained: bool = False, **kwargs: Any) -> EANNSparseResNet:
    """The paper's EANN baseline: Sparse ResNet-98 (48 units) with exits after units 6, 12, 24, 48."""
    return _create("eann_cifar_sparse_resnet98", pretrained, 16, **kwargs)


@register_model
def eann_cifar_sparse_resnet50(pretrained: bool = False, **kwargs: Any) -> EANNSparseResNet:
    """The same at CPU size: Sparse ResNet-50 (24 units) with exits after units 3, 6, 12, 24."""
    return _create("eann_cifar_sparse_resnet50", pretrained, 8, **kwargs)
