"""The anytime model contract shared by every nested network (SPEC section 2).

A subclass provides ``num_stages``, ``forward_stages``, ``forward_anytime``, ``extract_stage``
and ``heads`` (one classifier per stage).

``forward_anytime(x)`` is a generator. Iterated, it yields every stage's logits for the whole batch.
After a stage, ``generator.send(rows)`` (a 1-D index tensor into the current batch) continues with
only those inputs: the generator drops every other row of its cached activations (``keep_rows``),
and the stages after that return ``len(rows)`` rows. That is how early exit stops computing for
the inputs that have left (``timm_anytime.inference``). This mixin adds stage selection and the per-stage
parameter bookkeeping that the optimizers need (stage masks, subnetwork sizes d_i).
"""

from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # typing.TypeIs is Python 3.13+; typing_extensions comes with torch
    from typing_extensions import TypeIs

from ..mixin_base import MixinBase


class AnytimeMixin(MixinBase):
    """Stage selection and per-stage parameter ownership for a nested ``nn.Module``."""

    num_stages: int
    stage: int
    #: True when one forward of each D_k alone (``set_active_stage(k); model(x)``) gives the same
    #: per-stage gradients as ``forward_stages`` at less cost, because the single pass runs every
    #: stage's loss through full-width layers (width nesting). The D_S pass must then update every
    #: BatchNorm statistic that ``forward_stages`` updates. The trainer runs the per-stage backward
    #: passes of OSGD that way (``train.stage_passes``).
    separate_stage_passes: ClassVar[bool] = False
    __jit_unused_properties__: ClassVar[list[str]] = ["active_stage"]  # not compiled by TorchScript
    if TYPE_CHECKING:  # provided by the model (declared for the type checker alone)

        def heads(self) -> Sequence[nn.Module]: ...

    def check_stage(self, stage: int) -> int:
        if not isinstance(stage, int) or isinstance(stage, bool) or not 1 <= stage <= self.num_stages:
            raise ValueError(
                f"stage must be an integer in 1..{self.num_stages} (1 = the smallest subnetwork), got {stage!r}"
            )
        return stage

    @torch.jit.ignore
    def set_active_stage(self, stage: int) -> nn.Module:
        """Make ``model(x)`` run subnetwork D_stage alone, at D_stage's cost. Returns the model."""
        stage = self.check_stage(stage)
        for module in self.modules():
            state = module.__dict__
            if "stage" in state and "num_stages" in state:
                assign_stage(module, stage)
        return self

    @property
    def active_stage(self) -> int:
        return self.stage

    @torch.jit.ignore
    def head_parameters(self, stage: int) -> list[nn.Parameter]:
        return list(self.heads()[self.check_stage(stage) - 1].parameters())

    @torch.jit.ignore
    def element_stages(self) -> dict[nn.Parameter, Tensor]:
        """For every body parameter, the stage that introduces each element (0: never used)."""
        owners: dict[nn.Parameter, Tensor] = {}
        head_params = {id(p) for s in range(1, self.num_stages + 1) for p in self.head_parameters(s)}
        for module in self.modules():
            stage_of_elements = getattr(module, "stage_of_elements", None)  # the nested layers'
            if stage_of_elements is not None:
                for name, owner in stage_of_elements().items():
                    param = getattr(module, name)
                    owners[param] = owner.to(param.device)
        for param in self.parameters():
            if param not in owners and id(param) not in head_params:
                raise RuntimeError("a body parameter has no stage owner; nested layers must define stage_of_elements")
        return owners

    def _masks(self, stage: int, up_to: bool) -> dict[nn.Parameter, Tensor]:
        """Body elements owned by ``stage`` (or by any stage <= ``stage``), plus head ``stage``."""
        stage = self.check_stage(stage)
        masks = {}
        for param, owner in self.element_stages().items():
            mask = (owner >= 1) & (owner <= stage) if up_to else owner == stage
            if bool(mask.any()):
                masks[param] = mask
        masks.update({p: torch.ones_like(p, dtype=torch.bool) for p in self.head_parameters(stage)})
        return masks

    @torch.jit.ignore
    def stage_masks(self, stage: int) -> dict[nn.Parameter, Tensor]:
        """w_stage minus w_(stage-1): per parameter, a bool mask of the elements stage introduces
        (its stripe of every layer, and its head)."""
        return self._masks(stage, up_to=False)

    @torch.jit.ignore
    def stage_parameters(self, stage: int) -> list[nn.Parameter]:
        """Parameters holding elements introduced at ``stage`` (see ``stage_masks`` for which)."""
        return list(self.stage_masks(stage))

    @torch.jit.ignore
    def subnetwork_masks(self, stage: int) -> dict[nn.Parameter, Tensor]:
        """What loss L_stage reaches: the body elements of stages <= stage, and head ``stage``."""
        return self._masks(stage, up_to=True)

    @torch.jit.ignore
    def subnetwork_sizes(self) -> list[int]:
        """d_i, the number of parameters that loss L_i reaches, for NormSGD."""
        return [sum(int(m.sum()) for m in self.subnetwork_masks(s).values()) for s in range(1, self.num_stages + 1)]

    @torch.jit.ignore
    def osgd_reach_masks(self) -> list[dict[nn.Parameter, Tensor]]:
        """Per-task reach masks for ``osgd.OSGD(reach_masks=...)``, one per stage."""
        return [self.subnetwork_masks(s) for s in range(1, self.num_stages + 1)]


def keep_rows(state: Any, rows: Tensor | None) -> Any:
    """``state`` (tensors in dicts, lists and tuples, other values left as they are) with only
    ``rows`` of every tensor's batch dimension (dim 0); ``state`` itself when ``rows`` is None.
    The cached activations of ``forward_anytime`` are batch-first, so this is how a generator
    continues with the inputs still in flight."""
    if rows is None:
        return state
    if isinstance(state, Tensor):
        return state.index_select(0, rows.to(state.device))
    if isinstance(state, dict):
        return {key: keep_rows(value, rows) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(keep_rows(value, rows) for value in state)
    return state


@runtime_checkable
class AnytimeModel(Protocol):
    """What every anytime network provides (SPEC section 2): stages to run, select and extract, and
    the per-stage parameter masks the optimizers need (``AnytimeMixin`` supplies the masks).
    ``isinstance(model, AnytimeModel)`` checks that a model has these members."""

    num_stages: int

    def forward_stages(self, x: Tensor) -> list[Tensor]: ...

    def forward_anytime(self, x: Tensor) -> Generator[Tensor, Tensor | None, None]: ...

    def set_active_stage(self, stage: int) -> nn.Module: ...

    def extract_stage(self, stage: int) -> nn.Module: ...

    def stage_masks(self, stage: int) -> dict[nn.Parameter, Tensor]: ...

    def osgd_reach_masks(self) -> list[dict[nn.Parameter, Tensor]]: ...


def assign_stage(module: nn.Module, stage: int) -> None:
    """``module.stage = stage`` for the plain ``int`` attribute the nested layers and models keep.

    Written to the instance dict directly: ``set_active_stage`` does this for every layer on each
    call, and ``nn.Module.__setattr__`` (its checks for parameters, buffers and submodules) and
    ``hasattr`` on a module (a failed ``nn.Module.__getattr__``) made a switch cost 180 us,
    a seventh of a batch-1 CIFAR forward. A switch per input (serving under a deadline) pays that."""
    module.__dict__["stage"] = stage


def is_anytime_model(model: object) -> "TypeIs[AnytimeModel]":
    """Whether ``model`` is an anytime network (has the :class:`AnytimeModel` members)."""
    return isinstance(model, AnytimeModel)


def num_stages_of(model: nn.Module) -> int:
    """Stages of an anytime model; 1 for any other classifier (a plain network is a 1-stage predictor)."""
    return int(model.num_stages) if is_anytime_model(model) else 1


def stage_logits(model: nn.Module, x: Tensor) -> list[Tensor]:
    """Every stage's logits from one pass: ``forward_stages`` for anytime models, ``[model(x)]`` otherwise."""
    return model.forward_stages(x) if is_anytime_model(model) else [model(x)]
