"""``OSGD``: wrap any ``torch.optim`` optimizer to train on a prioritized list of task losses."""

from __future__ import annotations

import math
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim import Optimizer

from .buffers import TaskGradients
from .distributed import all_reduce_mean_, default_world_size
from .methods import CombineInfo, Combiner

NonFinite = Literal["skip", "raise"]
#: One task's loss: a scalar tensor, or a function that computes it when its backward pass is due.
TaskLoss = Tensor | Callable[[], Tensor]
#: One task's reach masks: parameter -> bool mask of the elements the task reaches. Both spellings,
#: as Mapping is invariant in its key: the dict[nn.Parameter, Tensor] model code builds is no Mapping[Tensor, Tensor].
ParamMasks = Mapping[Tensor, Tensor] | Mapping[torch.nn.Parameter, Tensor]


class NonFiniteGradientError(FloatingPointError):
    """A task's gradient holds NaN or inf (raised with ``on_nonfinite="raise"``)."""


class OSGD(Optimizer):
    """Combine per-task gradients (OSGD, NormSGD or a weighted sum), then step a wrapped optimizer.

    ``backward(losses)`` computes one gradient per task, over the parameters that task reaches,
    and writes their combination into ``.grad``, exactly where ``loss.backward()`` would: gradient
    clipping, ``GradScaler``, Accelerate and logging that read ``.grad`` keep working. ``step()``
    steps the wrapped optimizer. The wrapper shares the wrapped optimizer's ``param_groups`` and
    ``state``, so learning-rate schedulers and ``state_dict`` checkpoints work unchanged.

    Args:
        optimizer: Any ``torch.optim.Optimizer`` (SGD, AdamW, a timm optimizer, ...).
        method: ``"osgd"`` (Alg. 2), ``"osgd_norm"``, ``"sum"`` (SGD, eq. 1) or ``"norm"`` (NormSGD).
        priority: Task indices, highest priority first (default: loss order). The first task's
            gradient passes through unchanged; later ones lose their components along earlier ones.
        task_weights: Loss weights k_i (``method="sum"`` only).
        norm_scale: C of the normalized methods: each task gradient is rescaled to C * sqrt(d_i).
        reduction: ``"sum"``, ``"mean"`` or ``"mean_reached"``; default: the paper's definition
            for the method (mean for sum, per-parameter mean for norm, sum for the OSGD methods).
        task_dims: d_i, parameters reached by each task. Default: counted from the parameters each
            task's loss reaches (and ``reach_masks``).
        reach_masks: Per task, ``{parameter: bool mask}`` for tensors that a task reaches only in
            part (e.g. the rows of one stage in a width-nested layer). Used for d_i and for the
            per-parameter mean of ``"mean_reached"``. Parameters not listed count whole.
        eps: A projected direction with less than ``eps * |g|`` left is dropped.
        on_nonfinite: ``"skip"`` (warn and skip the step) or ``"raise"`` when a task gradient is
            NaN/inf. With a ``GradScaler`` passed to :meth:`backward`, the scaler handles overflow.
        process_group: Group to average per-task gradients over under data parallelism.
        sync_gradients: Average across ranks; default: whenever ``torch.distributed`` is
            initialized with more than one rank.

    Example::

        opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), method="osgd")
        opt.zero_grad()
        info = opt.backward([loss_1, loss_2, loss_3])
        opt.step()
    """

    def __init__(
        self,
        optimizer: Optimizer,
        method: str = "osgd",
        priority: Sequence[int] | None = None,
        task_weights: Sequence[float] | None = None,
        norm_scale: float = 0.5,
        *,
        reduction: str | None = None,
        task_dims: Sequence[float] | None = None,
        reach_masks: Sequence[ParamMasks] | None = None,
        eps: float = 1e-6,
        on_nonfinite: NonFinite = "skip",
        process_group: dist.ProcessGroup | None = None,
        sync_gradients: bool | None = None,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"OSGD wraps a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if isinstance(optimizer, OSGD):
            raise TypeError("OSGD cannot wrap another OSGD")
        if on_nonfinite not in ("skip", "raise"):
            raise ValueError(f"on_nonfinite must be 'skip' or 'raise', got {on_nonfinite!r}")
        self.combiner = Combiner(method, priority, task_weights, norm_scale, reduction, eps)
        self.optimizer = optimizer
        self.on_nonfinite = on_nonfinite
        self.process_group = process_group
        self.sync_gradients = sync_gradients
        self.task_dims = None if task_dims is None else tuple(float(d) for d in task_dims)
        self.reach_masks = self._check_masks(reach_masks)
        # Counted once: masks are static, and counting on every step would sync the device.
        self._mask_counts = (
            None if self.reach_masks is None else [{p: int(m.sum()) for p, m in t.items()} for t in self.reach_masks]
        )
        self._grads: TaskGradients | None = None  # flat per-task buffers, kept between steps
        sizes = {
            name: len(spec)
            for name, spec in (
                ("priority", priority),
                ("task_weights", task_weights),
                ("task_dims", self.task_dims),
                ("reach_masks", self.reach_masks),
            )
            if spec is not None
        }
        if len(set(sizes.values())) > 1:
            raise ValueError(f"the task counts disagree: {sizes}")
        self.num_tasks: int | None = next(iter(sizes.values()), None)

        # Share the wrapped optimizer's groups and state (timm's Lookahead does the same), and set
        # up what torch.optim.Optimizer.__init__ would, without re-registering the parameters.
        self.defaults = optimizer.defaults
        self.param_groups = optimizer.param_groups
        self.state = optimizer.state
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._patch_step_function()
        self.last_info: CombineInfo | None = None  # diagnostics of the latest combination
        self._reset()

    # ------------------------------------------------------------------ state of one accumulation
    def _reset(self) -> None:
        self._accumulating = False  # per-task gradients of the current accumulation are stored
        self._pending = False  # gradients added since the last combination
        self._written: list[tuple[Tensor, weakref.ref[Tensor], int]] = []  # (param, its .grad, version)
        self._scale: float | None = None  # GradScaler scale of the accumulated gradients
        self._losses: list[Tensor] = []  # detached; read only to explain a non-finite gradient

    def _grads_untouched(self) -> bool:
        """True while every .grad written by the last combination is still in place, unchanged."""
        for param, ref, version in self._written:
            grad = param.grad
            if grad is None or grad._version != version or grad is not ref():
                return False
        return True

    @staticmethod
    def _check_masks(
        reach_masks: Sequence[ParamMasks] | None,
    ) -> tuple[dict[Tensor, Tensor], ...] | None:
        if reach_masks is None:
            return None
        checked = []
        for task, masks in enumerate(reach_masks):
            entry = {}
            for param, mask in masks.items():
                if mask.shape != param.shape or mask.dtype != torch.bool:
                    raise ValueError(
                        f"reach_masks[{task}]: a mask must be a bool tensor shaped like its parameter "
                        f"{tuple(param.shape)}, got {mask.dtype} {tuple(mask.shape)}"
                    )
                entry[param] = mask.to(param.device)
            checked.append(entry)
        return tuple(checked)

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.requires_grad]

    # ------------------------------------------------------------------ public API
    def backward(
        self,
        losses: Sequence[TaskLoss],
        *,
        grad_scaler: torch.amp.GradScaler | None = None,
        combine: bool = True,
    ) -> CombineInfo | None:
        """Add each loss's gradient to its task's accumulated gradient, then combine into ``.grad``.

        One backward pass per task, each over the parameters that task reaches. Repeated calls
        before :meth:`step` accumulate the raw per-task gradients (as ``.backward()`` accumulates
        ``.grad``), and the combination always uses the accumulated sum: gradient accumulation
        gives the large-batch result. Anything that clears or changes ``.grad`` in between
        (``zero_grad``, unscaling, clipping) starts afresh.

        Args:
            losses: One entry per task, in task order: a scalar loss tensor, or a function of no
                arguments returning one. Tensors share one graph, kept until the last tensor's
                backward pass. A function is called just before its task's backward pass, so its
                graph lives only for that pass: when each task's loss comes from its own forward
                (e.g. one per subnetwork), only one task's activations are in memory at a time.
            grad_scaler: A ``torch.amp.GradScaler`` for float16 training: the losses are scaled
                here, and ``.grad`` holds the combined direction times the scale, ready for
                ``grad_scaler.step(optimizer)``. Correct for every method (also the normalized
                ones, which compute their weights from unscaled gradients).
            combine: Set False on the first micro-batches of an accumulation to skip the
                combination; :meth:`step` combines what is pending. Leave True on the last one
                when a ``GradScaler`` or anything else reads ``.grad`` before ``step``.

        Returns:
            The :class:`~osgd.CombineInfo` of the combination, or None when ``combine=False``.
        """
        entries = self._check_losses(losses)
        if self._accumulating and not self._pending and not self._grads_untouched():
            self._reset()  # .grad was cleared or changed since the last combination
        scaler = grad_scaler if grad_scaler is not None and grad_scaler.is_enabled() else None
        params = self._params()
        if not self._accumulating:
            key = TaskGradients.key_of(params, len(entries))
            if self._grads is None or self._grads.key != key:
                self._grads = TaskGradients(params, len(entries))
            else:
                self._grads.zero_()
            self._scale = float(scaler.get_scale()) if scaler is not None else None
            self._accumulating = True
        elif (scaler is not None) != (self._scale is not None):
            raise RuntimeError("pass the same grad_scaler to every backward() of one accumulation")
        assert self._grads is not None

        # Tensor losses may share a graph: keep it until the last of them has been differentiated.
        last_tensor = max((t for t, entry in enumerate(entries) if isinstance(entry, Tensor)), default=-1)
        detached = []
        try:
            for task, entry in enumerate(entries):
                loss = self._check_loss(task, entry() if not isinstance(entry, Tensor) else entry, called=True)
                detached.append(loss.detach())
                if scaler is not None:  # then self._scale is set too (checked above)
                    loss = scaler.scale(loss)
                grads = torch.autograd.grad(loss, params, retain_graph=task < last_tensor, allow_unused=True)
                self._grads.add_(task, grads)
        except BaseException:
            self._reset()  # a half-accumulated step must not be combined; .grad is untouched
            raise
        self._losses = detached
        self._pending = True
        if combine:
            return self._combine()
        return None

    def _check_loss(self, task: int, loss: object, called: bool = False) -> Tensor:
        source = f"loss {task}" + (" (returned by its function)" if called else "")
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise ValueError(f"{source} must be a scalar tensor, got {shape}: reduce it (e.g. .mean())")
        if not loss.requires_grad:
            raise ValueError(
                f"{source} does not require grad: was it computed under torch.no_grad() or from detached tensors?"
            )
        return loss

    def _check_losses(self, losses: Sequence[TaskLoss]) -> list[TaskLoss]:
        if isinstance(losses, Tensor) or not isinstance(losses, Sequence) or len(losses) == 0:
            raise TypeError(
                "backward() takes a non-empty list of scalar losses (or functions returning one), one per task"
            )
        entries = list(losses)
        for task, entry in enumerate(entries):
            if isinstance(entry, Tensor):
                self._check_loss(task, entry)
            elif not callable(entry):
                raise ValueError(
                    f"loss {task} must be a scalar tensor or a function returning one, got {type(entry).__name__}"
                )
        accumulated = self._grads.num_tasks if self._accumulating and self._grads is not None else None
        expected = self.num_tasks if self.num_tasks is not None else accumulated
        if expected is not None and len(entries) != expected:
            raise ValueError(
                f"got {len(entries)} losses, but this optimizer combines {expected} tasks "
                f"(priority={self.combiner.priority}); pass one loss per task, in task order"
            )
        return entries

    def _task_dims(self) -> list[float]:
        if self.task_dims is not None:
            return list(self.task_dims)
        assert self._grads is not None
        return self._grads.task_dims(self._mask_counts)

    def _combine(self) -> CombineInfo:
        """All-reduce the per-task gradients if distributed, combine them, write ``.grad``."""
        grads = self._grads
        assert grads is not None
        world = default_world_size(self.process_group)
        if self.sync_gradients if self.sync_gradients is not None else world > 1:
            all_reduce_mean_(grads.buffers(), self.process_group)
        gram = grads.gram()  # the step's one read of the device: n x n numbers
        if self._scale is not None:
            gram = gram / self._scale**2  # weights come from the unscaled gradients
        info = self.combiner.weights(gram, self._task_dims())
        if info.nonfinite_tasks and self.on_nonfinite == "raise" and self._scale is None:
            self._pending = False
            raise NonFiniteGradientError(self._nonfinite_message(info))

        # Non-finite: write the raw sum, so that a GradScaler (or any check) sees the NaN/inf.
        weights = torch.ones(grads.num_tasks, dtype=torch.float64) if info.nonfinite_tasks else info.weights
        written = grads.write_combination(
            weights, per_element_mean=info.reduction == "mean_reached", masks=self.reach_masks
        )
        self._written = [
            (param, weakref.ref(grad), grad._version) for param in written if (grad := param.grad) is not None
        ]
        self._pending = False
        self.last_info = info
        return info

    def _nonfinite_message(self, info: CombineInfo) -> str:
        parts = []
        for task in info.nonfinite_tasks:
            loss = float(self._losses[task]) if task < len(self._losses) else math.nan
            detail = f"its loss is {loss}" if not math.isfinite(loss) else f"its loss is finite ({loss:.4g})"
            parts.append(f"task {task} ({detail})")
        return (
            "non-finite (NaN/inf) gradient in " + ", ".join(parts) + ". Lower the learning rate, check the "
            "loss and inputs, or use a GradScaler for float16 training."
        )

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Step the wrapped optimizer on the combined gradient; skip it if a task's is NaN/inf.

        With a ``closure``, the closure must call :meth:`backward` (it may be evaluated several
        times, as by LBFGS); a non-finite evaluation then leaves ``.grad`` as None.
        """
        if closure is not None:
            try:
                return self.optimizer.step(self._wrap_closure(closure))
            finally:
                self._reset()
        if self._pending:
            if self._scale is not None and self._written == []:
                raise RuntimeError(
                    "with a GradScaler, the last backward() before the step must use combine=True: "
                    "the scaler reads .grad before calling step()"
                )
            self._combine()
        info = self.last_info
        try:
            if info is not None and info.nonfinite_tasks:
                warnings.warn(f"OSGD skipped the optimizer step: {self._nonfinite_message(info)}", stacklevel=2)
                return None
            return self.optimizer.step()
        finally:
            self._reset()  # the per-task gradients are consumed by the step

    def _wrap_closure(self, closure: Callable[[], Any]) -> Callable[[], Any]:
        def evaluate() -> Any:
            self._reset()
            loss = closure()
            if self._pending:
                self._combine()
            info = self.last_info
            if info is not None and info.nonfinite_tasks:
                message = self._nonfinite_message(info)
                if self.on_nonfinite == "raise":
                    raise NonFiniteGradientError(message)
                warnings.warn(f"OSGD skipped this evaluation's update: {message}", stacklevel=2)
                for param, _, _ in self._written:
                    param.grad = None
            return loss

        return evaluate

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the per-task gradients and the wrapped optimizer's ``.grad``."""
        self._reset()
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's state dict (the wrapper keeps no state between steps)."""
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)
        self.param_groups = self.optimizer.param_groups
        self.state = self.optimizer.state

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("OSGD is not picklable; checkpoint optimizer.state_dict() instead")

    def __repr__(self) -> str:
        c = self.combiner
        inner = repr(self.optimizer).replace("\n", "\n    ")
        return (
            f"OSGD(method={c.method!r}, priority={c.priority}, reduction={c.reduction!r}, "
            f"norm_scale={c.norm_scale}, task_weights={c.task_weights}) wrapping\n    {inner}"
        )
