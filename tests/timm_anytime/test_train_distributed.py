"""``accelerate launch`` with 2 CPU processes (gloo) == 1 process, for OSGD and for SGD.

Each process holds half of every global batch, and BatchNorm normalizes over that half. The
single-process run that computes the same thing splits each batch into the same two halves as
micro-batches (``grad_accum=2``); the parameters must then agree. (BatchNorm's running statistics
differ by design: under DDP every process uses process 0's.) Gradient clipping and the weight
average run on top: every process clips the same all-reduced gradient and averages the same weights.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.timm_anytime.runs import tiny_args, tiny_config, weights
from timm_anytime.train import train

EXTRA_SETTINGS = dict(clip_grad=0.05, model_ema=True, model_ema_decay=0.5)  # a clip this small is active
EXTRAS = ("--clip-grad=0.05", "--model-ema", "--model-ema-decay=0.5")


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["osgd", "sgd"])
def test_two_processes_equal_one_process(tmp_path: Path, method: str) -> None:
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes=2",
        "--num_machines=1",
        f"--main_process_port={free_port()}",  # not the default 29500: pytest -n runs tests side by side
    ]
    launch += ["--mixed_precision=no", "--dynamo_backend=no", "-m", "timm_anytime.cli.train"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_CONFIG_FILE": str(tmp_path / "none.yaml")}
    result = subprocess.run(
        [*launch, *tiny_args(tmp_path / "two", f"--method={method}", *EXTRAS)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each launched process (OMP_NUM_THREADS=1): the same float rounding
    try:
        train(tiny_config(tmp_path / "one", method=method, grad_accum=2, **EXTRA_SETTINGS))
    finally:
        torch.set_num_threads(threads)  # later tests in this worker keep their share of the cores

    for file in ("model.safetensors", "model_ema.safetensors"):
        two, one = weights(tmp_path / "two", file), weights(tmp_path / "one", file)
        compared = 0
        for name, value in one.items():
            if "running_" in name or "num_batches" in name:
                continue
            torch.testing.assert_close(two[name], value, rtol=1e-4, atol=1e-5, msg=f"{file}: {name}")
            compared += 1
        assert compared > 50
    one = weights(tmp_path / "one")
    # and it is not trivially equal: one process on whole batches trains differently
    train(tiny_config(tmp_path / "whole", method=method))
    assert not torch.allclose(weights(tmp_path / "whole")["conv1.weight"], one["conv1.weight"], atol=1e-5)
