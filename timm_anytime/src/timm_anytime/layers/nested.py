"""Width-nested layers: every weight that writes stripe j reads only input stripes <= j.

Each layer keeps the full-size tensors of an ordinary layer, under the ordinary names, so a
nested network's state dict has the keys and shapes of the dense network it nests. The parts
above the block diagonal are structurally zero: a non-persistent mask zeroes them in every
forward, so they get no gradient and nothing ever reads them.

Two ways to run a layer, both for subnetwork ``stage`` (1-based, stripes 1..stage):

* ``forward(x)``: one dense op over the prefix channels of ``self.stage`` (what ``model(x)`` and
  ``set_active_stage`` use: the fastest kernel, later stripes never read).
* ``forward_stripes(x, lo, hi)``: only the new stripes lo..hi, from the prefix of stripes <= hi
  (what ``forward_anytime`` uses: stage k costs only what D_k adds to D_{k-1}).
  ``forward_stripe(x, k)`` is the one-stripe case.
"""

from collections.abc import Callable, Hashable
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

try:
    from torch.fx._symbolic_trace import is_fx_symbolic_tracing
except ImportError:  # torch 2.6 has not got it (2.9 has): also true under torch.export, tested anyway below
    from torch.fx._symbolic_trace import is_fx_tracing as is_fx_symbolic_tracing

from ..stripes import StripeSpec


def _untraced_inference() -> bool:
    """Autograd is off and nothing traces or compiles: the only state in which the nested layers
    may reuse values derived from their tensors between calls."""
    return not (torch.is_grad_enabled() or torch.compiler.is_compiling() or is_fx_symbolic_tracing())


class NestedConv2d(nn.Conv2d):
    """A Conv2d whose output stripe j reads input stripes 1..j (all of the input if not striped)."""

    __jit_ignored_attributes__: ClassVar[list[str]] = ["_derived_cache"]

    out_splits: list[int]
    in_splits: list[int]
    weight_mask: Tensor  # buffer: 1 where an output stripe reads an input stripe

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        *,
        spec: StripeSpec,
        striped_input: bool = True,
        bias: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias=bias, device=device, dtype=dtype)
        stages = spec.num_stages
        self.num_stages = stages
        self.stage = stages
        self.out_splits = list(spec.splits(out_channels))
        self.in_splits = list(spec.splits(in_channels)) if striped_input else [0] + [in_channels] * stages
        mask = torch.zeros(out_channels, in_channels, 1, 1, device=device, dtype=self.weight.dtype)
        for j in range(1, stages + 1):
            mask[self.out_splits[j - 1] : self.out_splits[j], : self.in_splits[j]] = 1
        self.register_buffer("weight_mask", mask, persistent=False)
        # Inference-only values derived from the weight (whether the structural zeros hold, the
        # contiguous stripe weights), each valid for one version of the weight (see _derived).
        self._derived_cache: dict[object, tuple[tuple[int, int], object, object]] = {}
        self._zeros_hold = False
        with torch.no_grad():
            self.weight.mul_(mask)

    @torch.jit.unused
    def _needs_mask(self) -> bool:
        """In inference (``_caching``), whether the weights outside the mask are not all zero,
        checked once per version of the weight (see ``_derived``). Outside inference every path
        masks: autograd must give the structural zeros no gradient, and traced or compiled graphs
        must not bake in a check made at trace time."""
        self._zeros_hold = self._derived("zeros", lambda: not bool(torch.any(self.weight * (1 - self.weight_mask))))
        return not self._zeros_hold

    @torch.jit.unused
    def _caching(self) -> bool:
        """Whether values derived from the weight may be cached: only in inference, never while
        tracing or compiling, and not for inference tensors (they keep no version counter)."""
        return _untraced_inference() and not cast(Tensor, self._parameters["weight"]).is_inference()

    @torch.jit.unused
    def _derived(self, key: object, make: Callable[[], Any]) -> Any:
        """``make()``, cached under ``key`` until the weight changes: in place (its version counter
        moves) or by replacement (``.data = ...``, ``.to()``, ``.double()``: its data pointer
        moves; the entry holds the old storage, so no new tensor can reuse that address)."""
        weight = cast(Tensor, self._parameters["weight"])
        stamp = (weight._version, weight.data_ptr())
        entry = self._derived_cache.get(key)
        if entry is None or entry[0] != stamp:
            entry = (stamp, weight.untyped_storage(), make())
            self._derived_cache[key] = entry
        return entry[2]

    def masked_weight(self) -> Tensor:
        return self.weight * self.weight_mask

    def forward(self, x: Tensor) -> Tensor:
        k = self.stage
        if torch.jit.is_scripting():
            out, inp = self.out_splits[k], self.in_splits[k]
            weight = self.weight[:out, :inp] * self.weight_mask[:out, :inp]
        else:
            weight = self._stripe_weight(1, k)  # stripes 1..k; in inference kept between calls
        bias = self.bias
        if bias is not None:
            bias = bias[: self.out_splits[k]]
        return self._conv_forward(x, weight, bias)

    @torch.jit.unused
    def _contiguous(self, weight: Tensor) -> Tensor:
        """``weight`` contiguous in this layer's weight layout (a view if it is already)."""
        layout = torch.contiguous_format
        if self.weight.is_contiguous(memory_format=torch.channels_last) and not self.weight.is_contiguous():
            layout = torch.channels_last
        return weight.contiguous(memory_format=layout)

    @torch.jit.unused
    def _stripe_weight(self, lo: int, hi: int) -> Tensor:
        """The weights of output stripes lo..hi over the input prefix of stripes <= hi, masked
        (for lo < hi the block holds structural zeros above its diagonal; ``_stripe_weight(1, k)``
        is D_k's weight). Under autograd or tracing a (masked) view; in inference a contiguous
        copy, masked only where the structural zeros do not hold, kept until the weight changes
        (a convolution would otherwise copy the strided view on every call; for the full stage it
        is the weight itself). The copies hold parts of the weight a second time."""
        if not self._caching():
            return self._block(lo, hi, True)

        def contiguous_block() -> Tensor:  # (a view when it is contiguous already: no copy)
            return self._contiguous(self._block(lo, hi, lo < hi and self._needs_mask()))

        # (no slicing before the lookup: a view of the weight costs more than the lookup itself)
        return self._derived((lo, hi), contiguous_block)

    @torch.jit.unused
    def _block(self, lo: int, hi: int, mask: bool) -> Tensor:
        """The weight block of ``_stripe_weight`` as a view, multiplied by its mask if ``mask`` and
        the block reaches above the diagonal (lo < hi; a single stripe lies inside the mask)."""
        rows = slice(self.out_splits[lo - 1], self.out_splits[hi])
        weight = self.weight[rows, : self.in_splits[hi]]
        return weight * self.weight_mask[rows, : self.in_splits[hi]] if mask and lo < hi else weight

    def forward_stripes(self, x: Tensor, lo: int, hi: int) -> Tensor:
        """Output stripes lo..hi from the input prefix of stripes <= hi, in one convolution.
        For lo == hi it multiplies no structural zero; for lo < hi it spends the multiply-adds
        above the block diagonal to save the calls of hi - lo + 1 separate ones."""
        weight = self._stripe_weight(lo, hi)
        bias = self.bias
        if bias is not None:
            bias = bias[self.out_splits[lo - 1] : self.out_splits[hi]]
        return self._conv_forward(x, weight, bias)

    def forward_stripe(self, x: Tensor, k: int) -> Tensor:
        """Output stripe k from the input prefix of stripes <= k (inside the mask: no zeros)."""
        return self.forward_stripes(x, k, k)

    @torch.jit.ignore
    def stage_of_elements(self) -> dict[str, Tensor]:
        """For each parameter, the stage owning each element (0: structurally zero, unused)."""
        rows = torch.zeros(self.out_channels, dtype=torch.long)
        for j in range(1, self.num_stages + 1):
            rows[self.out_splits[j - 1] : self.out_splits[j]] = j
        owner = rows[:, None, None, None] * (self.weight_mask.cpu() > 0).long()
        out = {"weight": owner.expand_as(self.weight).clone()}
        if self.bias is not None:
            out["bias"] = rows.clone()
        return out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, stripes={self.out_splits}"


class NestedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the prefix channels of the active stage; per-channel, so nesting-safe."""

    __jit_ignored_attributes__: ClassVar[list[str]] = ["_slice_cache"]

    splits: list[int]

    def __init__(self, num_features: int, *, spec: StripeSpec, device=None, dtype=None, **kwargs) -> None:
        super().__init__(num_features, device=device, dtype=dtype, **kwargs)
        self.num_stages = spec.num_stages
        self.stage = spec.num_stages
        self.splits = list(spec.splits(num_features))
        self._slice_cache: dict[tuple[int, int], tuple[tuple[int, ...], tuple[Tensor | None, ...]]] = {}

    @torch.jit.unused
    def _inference_slices(self, lo: int, hi: int) -> tuple[Tensor | None, ...] | None:
        """In inference (eval mode, no autograd, not tracing or compiling), the running statistics
        and affine parameters of channels lo..hi as views kept between calls: a view follows
        in-place updates, and a replaced tensor (``.to()``, ``.data = ...``) changes the data
        pointers the entry is stamped with. None where the ordinary path must run."""
        if self.training or not _untraced_inference():
            return None
        # (the module's own dicts: nn.Module.__getattr__ costs more than the slicing it saves)
        tensors: tuple[Tensor | None, ...] = (self._buffers["running_mean"], self._buffers["running_var"])
        tensors += (self._parameters["weight"], self._parameters["bias"])
        if tensors[0] is None or tensors[1] is None:
            return None
        stamp = tuple(0 if t is None else t.data_ptr() for t in tensors)
        entry = self._slice_cache.get((lo, hi))
        if entry is None or entry[0] != stamp:
            entry = (stamp, tuple(None if t is None else t[lo:hi] for t in tensors))
            self._slice_cache[(lo, hi)] = entry
        return entry[1]

    def _normalize(self, x: Tensor, lo: int, hi: int, count: bool) -> Tensor:
        if not torch.jit.is_scripting():
            cached = self._inference_slices(lo, hi)
            if cached is not None:
                return F.batch_norm(x, cached[0], cached[1], cached[2], cached[3], False, 0.0, self.eps)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and count:
            assert self.num_batches_tracked is not None
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or self.running_mean is None
        running_mean: Tensor | None = None
        running_var: Tensor | None = None
        mean, var = self.running_mean, self.running_var
        if mean is not None and var is not None and (not self.training or self.track_running_stats):
            running_mean = mean[lo:hi]
            running_var = var[lo:hi]
        weight: Tensor | None = self.weight
        if weight is not None:
            weight = weight[lo:hi]
        bias: Tensor | None = self.bias
        if bias is not None:
            bias = bias[lo:hi]
        return F.batch_norm(x, running_mean, running_var, weight, bias, use_batch_stats, momentum, self.eps)

    def forward(self, x: Tensor) -> Tensor:
        return self._normalize(x, 0, self.splits[self.stage], True)

    def forward_stripes(self, x: Tensor, lo: int, hi: int) -> Tensor:
        """Normalize stripes lo..hi alone (``x`` holds only those stripes' channels)."""
        return self._normalize(x, self.splits[lo - 1], self.splits[hi], False)

    def forward_stripe(self, x: Tensor, k: int) -> Tensor:
        """Normalize stripe k alone (``x`` holds only that stripe's channels)."""
        return self.forward_stripes(x, k, k)

    @torch.jit.ignore
    def stage_of_elements(self) -> dict[str, Tensor]:
        rows = torch.zeros(self.num_features, dtype=torch.long)
        for j in range(1, self.num_stages + 1):
            rows[self.splits[j - 1] : self.splits[j]] = j
        return {name: rows.clone() for name in ("weight", "bias") if getattr(self, name) is not None}


def grow(cache: dict[Any, tuple[Tensor, int]], key: Hashable, new: Tensor, total: int) -> Tensor:
    """Append stripe ``new`` to the prefix cached under ``key`` (channels dim) and return the prefix.

    The stripes are written into one buffer of ``total`` channels, allocated with the first one, so
    a stage copies only its own stripe (never the prefix again), and at batch size 1 the returned
    prefix of an NCHW buffer is contiguous: the next convolution reads it in place. Under autograd
    the prefix is concatenated instead.
    """
    entry = cache.get(key)
    if new.requires_grad:  # under autograd, writing into a buffer that earlier stages read is not allowed
        prefix = new if entry is None else torch.cat([entry[0][:, : entry[1]], new], dim=1)
        cache[key] = (prefix, prefix.shape[1])
        return prefix
    buffer, filled = entry if entry is not None else (None, 0)
    if buffer is None or buffer.shape[1] != total:
        previous = buffer
        buffer = new.new_empty((new.shape[0], total, *new.shape[2:]))
        if previous is not None:
            buffer[:, :filled] = previous[:, :filled]
    end = filled + new.shape[1]
    if end > total:
        raise ValueError(f"stripe {key!r} overflows its {total} channels ({filled} + {new.shape[1]})")
    buffer[:, filled:end] = new
    cache[key] = (buffer, end)
    return buffer[:, :end]


def zero_pad_stripe(x: Tensor, stride: int) -> Tensor:
    """CIFAR option-A shortcut for one stripe: subsample, then double the channels with zeros."""
    return F.pad(x[:, :, ::stride, ::stride], (0, 0, 0, 0, 0, x.shape[1]))


def dense_state(model: nn.Module) -> dict[str, Tensor]:
    """The nested model's state with the structural zeros applied (masked conv weights)."""
    tensors = dict(model.state_dict())
    for name, module in model.named_modules():
        if hasattr(module, "weight_mask"):
            tensors[f"{name}.weight"] = module.masked_weight().detach()
    return tensors


def prefix_of(tensor: Tensor, shape: torch.Size) -> Tensor:
    """The leading block of ``tensor`` of ``shape`` (a subnetwork's slice of a nested tensor)."""
    return tensor[tuple(slice(0, size) for size in shape)] if tensor.dim() else tensor


def init_conv_weights(model: nn.Module) -> None:
    """timm's ResNet init for every convolution of ``model`` (Kaiming normal, fan-out, ReLU); a
    width-nested convolution keeps its structural zeros."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if isinstance(module, NestedConv2d):
                module.weight.data.mul_(module.weight_mask)
