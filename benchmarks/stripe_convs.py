"""Why width-nested anytime inference at batch 1 costs about 2x the last stage on a CPU at CIFAR size.

One 3x3 convolution of each CIFAR resolution stage (16 channels at 32x32, 32 at 16x16, 64 at 8x8),
at batch 1, in inference, three ways side by side (interleaved rounds, medians):

* ``dense``: the full-width convolution once (what the last stage alone runs).
* ``stripes``: what ``forward_anytime`` runs: three convolutions, stripe k's output channels from
  the input prefix of stripes <= k (power-of-two stripes, 1/4, 1/4, 1/2), the same FLOPs in all
  as the block-triangular dense weight.
* ``unfold``: an alternative that never re-reads earlier stripes: the im2col columns of each new
  input stripe are appended to a buffer (``F.unfold``) and each output stripe is one matrix product
  with the columns of its prefix.
* ``eager``: input-stationary: when input stripe k arrives, one convolution writes its contribution
  to every output stripe >= k into an accumulator (stripe k is then complete; the later ones wait
  for their own input stripes). Each input stripe is unfolded once and each call has a wide
  output, the same FLOPs in all; but stopping after stage k has then also paid the later stripes'
  share of stripes <= k, so an early exit costs more than D_k's FLOPs.
* ``onednn``: the three stripe convolutions forced through oneDNN
  (``torch.ops.aten.mkldnn_convolution``). At batch 1 PyTorch sends a 3x3 convolution whose input
  has at most 20,480 elements (every stripe here) to its own im2col kernel instead
  (``aten::_slow_conv2d_forward``); this asks whether oneDNN would do the stripes better.
  ``dense onednn`` is the dense convolution the same way.

    python benchmarks/stripe_convs.py [--threads 2] [--rounds 25]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

from timm_anytime.train.environment import cpu_name

SHAPES = ((16, 32), (32, 16), (64, 8))  # (channels, height = width) of the CIFAR stages


def variants(channels: int, size: int) -> dict[str, Callable[[], object]]:
    x = torch.randn(1, channels, size, size)
    weight = torch.randn(channels, channels, 3, 3)
    splits = [0, channels // 4, channels // 2, channels]
    stripe_weights = [weight[splits[k - 1] : splits[k], : splits[k]].contiguous() for k in (1, 2, 3)]
    stripe_matrices = [w.reshape(w.shape[0], -1) for w in stripe_weights]
    # input stripe k -> output stripes >= k
    eager_weights = [weight[splits[k - 1] :, splits[k - 1] : splits[k]].contiguous() for k in (1, 2, 3)]

    def dense() -> object:
        return F.conv2d(x, weight, padding=1)

    def stripes() -> object:
        return [F.conv2d(x[:, : splits[k]], stripe_weights[k - 1], padding=1) for k in (1, 2, 3)]

    def unfold() -> object:
        columns = torch.empty(channels * 9, size * size)
        outputs = []
        for k in (1, 2, 3):
            columns[splits[k - 1] * 9 : splits[k] * 9] = F.unfold(x[:, splits[k - 1] : splits[k]], 3, padding=1)[0]
            outputs.append(torch.mm(stripe_matrices[k - 1], columns[: splits[k] * 9]).view(1, -1, size, size))
        return outputs

    def eager() -> object:
        accumulator = F.conv2d(x[:, : splits[1]], eager_weights[0], padding=1)
        outputs = [accumulator[:, : splits[1]]]
        for k in (2, 3):
            accumulator[:, splits[k - 1] :] += F.conv2d(
                x[:, splits[k - 1] : splits[k]], eager_weights[k - 1], padding=1
            )
            outputs.append(accumulator[:, splits[k - 1] : splits[k]])
        return outputs

    no_bias, ones, pad = None, [1, 1], [1, 1]

    def onednn() -> object:
        return [
            torch.ops.aten.mkldnn_convolution(x[:, : splits[k]], stripe_weights[k - 1], no_bias, pad, ones, ones, 1)
            for k in (1, 2, 3)
        ]

    def dense_onednn() -> object:
        return torch.ops.aten.mkldnn_convolution(x, weight, no_bias, pad, ones, ones, 1)

    for path in (unfold, eager, onednn):  # every incremental path computes the same stripes
        for want, have in zip(stripes(), path(), strict=True):
            torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(dense_onednn(), dense(), rtol=1e-4, atol=1e-3)
    return {
        "dense": dense,
        "stripes": stripes,
        "unfold": unfold,
        "eager": eager,
        "onednn": onednn,
        "dense onednn": dense_onednn,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--inner", type=int, default=50, help="calls per timed sample")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}, batch 1")
    names = ("dense", "stripes", "unfold", "eager", "onednn", "dense onednn")
    print(
        "| channels, size | "
        + " | ".join(f"{name} (us)" for name in names)
        + " | "
        + " | ".join(f"{name} / dense" for name in names[1:])
        + " |"
    )
    print("|---" * (2 * len(names)) + "|")
    with torch.inference_mode():
        for channels, size in SHAPES:
            fns = variants(channels, size)
            for fn in fns.values():
                fn()
            samples: dict[str, list[float]] = {name: [] for name in fns}
            for _ in range(args.rounds):
                for name, fn in fns.items():
                    start = time.perf_counter()
                    for _ in range(args.inner):
                        fn()
                    samples[name].append((time.perf_counter() - start) / args.inner * 1e6)
            med = {name: statistics.median(values) for name, values in samples.items()}
            times = " | ".join(f"{med[name]:.0f}" for name in names)
            ratios = " | ".join(f"{med[name] / med['dense']:.2f}" for name in names[1:])
            print(f"| {channels}, {size}x{size} | {times} | {ratios} |")


if __name__ == "__main__":
    main()
