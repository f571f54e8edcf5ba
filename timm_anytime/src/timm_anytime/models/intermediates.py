"""timm's ``forward_intermediates`` for every family: the feature maps ``features_only=True`` gives.

timm models return their intermediate feature maps from ``forward_intermediates(x, indices, ...)``
(``timm/models/resnet.py`` is the template). Here the intermediates are the maps of the modules
``feature_info`` names (the stem, then each resolution stage), read with forward hooks while
``forward_features`` runs the active stage D_stage (``set_active_stage``), so they are exactly
what that forward computes: a width-nested D_k's maps have D_k's channels, a depth-nested D_k's
come from its own levels. One implementation serves every body, the depth-interlaced ones included,
whose resolution stages exist only inside the level-wise forward.

``prune_intermediate_layers`` is not provided: it would delete later stages' units and heads, which
the anytime API needs; timm's ``FeatureGetterNet`` skips pruning without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from timm.models._features import feature_take_indices  # as timm's own models import it
from torch import Tensor, nn

from ..mixin_base import MixinBase


class _IntermediatesDone(Exception):
    """Raised by a hook to stop the forward once the last requested map is read (``stop_early``)."""


def _called_module(module: nn.Module) -> nn.Module:
    """The module whose call produces ``module``'s output: a Sequential's output is its last
    child's, and gradient checkpointing (``layers.checkpointing.checkpoint_blocks``) calls the
    children, never the Sequential itself."""
    while isinstance(module, nn.Sequential) and len(module) > 0:
        module = module[-1]
    return module


class FeatureIntermediatesMixin(MixinBase):
    """``forward_intermediates`` over ``feature_info`` and ``forward_features`` (mixed into an
    ``nn.Module`` whose ``feature_info`` lists ``module`` names)."""

    if TYPE_CHECKING:  # provided by the model (declared for the type checker alone)
        feature_info: list[dict[str, Any]]

        def forward_features(self, x: Tensor) -> Tensor: ...

    @torch.jit.ignore
    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """The active stage's final features and its intermediate feature maps.

        Args:
            x: Input images [B, C, H, W].
            indices: Into ``feature_info`` (0: the stem, then each resolution stage): the last n if
                an int, all if None, these (negative from the end) if a sequence.
            norm: Accepted for timm's signature; no intermediate is normalized (as timm's ResNet):
                the final norm of a Sparse ResNet belongs to its head(s).
            stop_early: Stop the forward at the last requested map; the "final features"
                returned are then that map.
            output_fmt: ``"NCHW"`` only.
            intermediates_only: Return the list of maps alone.

        With gradient checkpointing on, the maps are read in the forward pass as usual; under
        timm's re-entrant checkpointing (``TIMM_REENTRANT_CKPT``) maps inside a checkpointed
        segment carry no gradient (the default, non-re-entrant, keeps it).

        Returns:
            ``(final features, maps)``, ``final`` as ``forward_features`` returns it (so
            ``forward_head(final)`` are the active stage's logits), or ``maps`` alone.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW' for this network, got {output_fmt!r}")
        wanted = list(indices) if isinstance(indices, tuple) else indices  # timm's signature: int or list
        take, _ = feature_take_indices(len(self.feature_info), wanted)
        modules = dict(self.named_modules())
        maps: dict[int, Tensor] = {}
        last = max(take)

        def keep(index: int):
            def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
                maps[index] = output  # a module run more than once (it is not, today): the last run
                if stop_early and index == last:
                    raise _IntermediatesDone

            return hook

        handles = [
            _called_module(modules[self.feature_info[i]["module"]]).register_forward_hook(keep(i))
            for i in dict.fromkeys(take)
        ]
        try:
            final = self.forward_features(x)
        except _IntermediatesDone:
            final = maps[last]
        finally:
            for handle in handles:
                handle.remove()
        missing = [i for i in take if i not in maps]
        if missing:
            raise ValueError(
                f"feature maps {missing} are not computed by the active stage {getattr(self, 'stage', '')} "
                "(an early exit that stops before them): call set_active_stage(model.num_stages) first"
            )
        intermediates = [maps[i] for i in take]
        return intermediates if intermediates_only else (final, intermediates)
