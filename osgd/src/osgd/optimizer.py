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

from .distributed import all_reduce_mean, default_world_size
from .methods import CombineInfo, Combiner

NonFinite = Literal["skip", "raise"]


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
        reach_masks: Sequence[Mapping[Tensor, Tensor]] | None = None,
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
        self._index_cache: dict[tuple[torch.device, tuple[int, ...]], Tensor] = {}
        self._count_cache: dict[tuple[int, tuple[int, ...]], Tensor] = {}  # (id(param), tasks)
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
        self._task_grads: list[dict[Tensor, Tensor]] = []  # per task: parameter -> raw gradient
        self._pending = False  # gradients added since the last combination
        self._written: list[tuple[Tensor, weakref.ref, int]] = []  # (param, its .grad, version)
        self._scale: float | None = None  # GradScaler scale of the accumulated gradients
        self._losses: list[Tensor] = []  # detached; read only to explain a non-finite gradient

    def _grads_untouched(self) -> bool:
        """True while every .grad written by the last combination is still in place, unchanged."""
        for param, ref, version in self._written:
            grad = param.grad
            if grad is None or grad is not ref() or grad._version != version:
                return False
        return True

    @staticmethod
    def _check_masks(
        reach_masks: Sequence[Mapping[Tensor, Tensor]] | None,
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
        losses: Sequence[Tensor],
        *,
        grad_scaler: torch.amp.GradScaler | None = None,
        combine: bool = True,
    ) -> CombineInfo | None:
        """Add each loss's gradient to its task's accumulated gradient, then combine into ``.grad``.

        One backward pass per task, each over the parameters that task reaches; the graph is kept
        only until the last task. Repeated calls before :meth:`step` accumulate the raw per-task
        gradients (as ``.backward()`` accumulates ``.grad``), and the combination always uses the
        accumulated sum: gradient accumulation gives the large-batch result. Anything that clears
        or changes ``.grad`` in between (``zero_grad``, unscaling, clipping) starts afresh.

        Args:
            losses: One scalar loss per task, in task order.
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
        losses = self._check_losses(losses)
        if self._task_grads and not self._pending and not self._grads_untouched():
            self._reset()  # .grad was cleared or changed since the last combination
        if not self._task_grads:
            self._task_grads = [{} for _ in losses]
            scaler_on = grad_scaler is not None and grad_scaler.is_enabled()
            self._scale = float(grad_scaler.get_scale()) if scaler_on else None
        elif (grad_scaler is not None and grad_scaler.is_enabled()) != (self._scale is not None):
            raise RuntimeError("pass the same grad_scaler to every backward() of one accumulation")
        if self._scale is not None:
            losses = [grad_scaler.scale(loss) for loss in losses]

        params = self._params()
        for task, loss in enumerate(losses):
            grads = torch.autograd.grad(loss, params, retain_graph=task < len(losses) - 1, allow_unused=True)
            buffers = self._task_grads[task]
            for param, grad in zip(params, grads, strict=True):
                if grad is not None:  # never mutated in place: autograd may hand out shared tensors
                    previous = buffers.get(param)
                    buffers[param] = grad.detach() if previous is None else previous + grad
        self._losses = [loss.detach() / (self._scale or 1.0) for loss in losses]
        self._pending = True
        if combine:
            return self._combine()
        return None

    def _check_losses(self, losses: Sequence[Tensor]) -> list[Tensor]:
        if isinstance(losses, Tensor) or not isinstance(losses, Sequence) or len(losses) == 0:
            raise TypeError("backward() takes a non-empty list of scalar losses, one per task")
        losses = list(losses)
        for task, loss in enumerate(losses):
            if not isinstance(loss, Tensor) or loss.numel() != 1:
                shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
                raise ValueError(f"loss {task} must be a scalar tensor, got {shape}: reduce it (e.g. .mean())")
            if not loss.requires_grad:
                raise ValueError(
                    f"loss {task} does not require grad: was it computed under torch.no_grad() or from "
                    "detached tensors?"
                )
        expected = self.num_tasks if self.num_tasks is not None else len(self._task_grads) or None
        if expected is not None and len(losses) != expected:
            raise ValueError(
                f"got {len(losses)} losses, but this optimizer combines {expected} tasks "
                f"(priority={self.combiner.priority}); pass one loss per task, in task order"
            )
        return losses

    def _task_dims(self) -> list[float]:
        if self.task_dims is not None:
            return list(self.task_dims)
        dims = []
        for task, buffers in enumerate(self._task_grads):
            counts = self._mask_counts[task] if self._mask_counts is not None else {}
            dims.append(float(sum(counts.get(p, p.numel()) for p in buffers)))
        return dims

    def _synchronize(self) -> None:
        world = default_world_size(self.process_group)
        if not (self.sync_gradients if self.sync_gradients is not None else world > 1):
            return
        keys = [(task, param) for task, buffers in enumerate(self._task_grads) for param in buffers]
        reduced = all_reduce_mean([self._task_grads[t][p] for t, p in keys], self.process_group)
        for (task, param), tensor in zip(keys, reduced, strict=True):
            self._task_grads[task][param] = tensor

    def _combine(self) -> CombineInfo:
        """All-reduce the per-task gradients if distributed, combine them, write ``.grad``."""
        self._synchronize()
        n = len(self._task_grads)
        params = [p for p in self._params() if any(p in buffers for buffers in self._task_grads)]
        device = params[0].device if params else torch.device("cpu")
        gram = torch.zeros(n, n, dtype=torch.float64, device=device)
        for param in params:
            tasks = [t for t in range(n) if param in self._task_grads[t]]
            block = torch.stack([self._task_grads[t][param].reshape(-1) for t in tasks]).to(torch.float64)
            index = self._task_index(tuple(tasks), gram.device)
            gram[index[:, None], index[None, :]] += (block @ block.T).to(gram.device)
        if self._scale is not None:
            gram = gram / self._scale**2  # weights come from the unscaled gradients
        info = self.combiner.weights(gram, self._task_dims())
        weights = [1.0] * n if info.nonfinite_tasks else info.weights.tolist()
        if info.nonfinite_tasks and self.on_nonfinite == "raise" and self._scale is None:
            self._pending = False
            raise NonFiniteGradientError(self._nonfinite_message(info))

        # Non-finite: write the raw sum, so that a GradScaler (or any check) sees the NaN/inf.
        written = []
        for param in params:
            tasks = [t for t in range(n) if param in self._task_grads[t]]
            compute = torch.float32 if param.dtype in (torch.float16, torch.bfloat16) else param.dtype
            direction = None
            for t in tasks:
                term = self._task_grads[t][param].to(compute) * weights[t]
                direction = term if direction is None else direction.add_(term)
            if info.reduction == "mean_reached":
                direction = direction / self._reach_count(param, tasks)
            param.grad = direction.to(param.dtype)
            written.append((param, weakref.ref(param.grad), param.grad._version))
        self._written = written
        self._pending = False
        self.last_info = info
        return info

    def _task_index(self, tasks: tuple[int, ...], device: torch.device) -> Tensor:
        key = (device, tasks)
        if key not in self._index_cache:
            self._index_cache[key] = torch.tensor(tasks, device=device)
        return self._index_cache[key]

    def _reach_count(self, param: Tensor, tasks: list[int]) -> Tensor | float:
        """How many of ``tasks`` reach each element of ``param`` (cached: the masks are static)."""
        if self.reach_masks is None or not any(param in self.reach_masks[t] for t in tasks):
            return float(len(tasks))
        key = (id(param), tuple(tasks))
        if key not in self._count_cache:
            count = torch.zeros(param.shape, dtype=torch.float32, device=param.device)
            for t in tasks:
                mask = self.reach_masks[t].get(param)
                count += 1.0 if mask is None else mask.to(torch.float32)
            self._count_cache[key] = count.clamp_min_(1.0)
        return self._count_cache[key]

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
