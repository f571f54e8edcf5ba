"""Data parallel exactness: 2 CPU processes (gloo) == 1 process on the concatenated batch."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel

from osgd import OSGD
from tests.osgd.multihead import batch, make_model

STEPS = 4
WORLD = 2


def train(model, opt, rank: int, world: int, wrapped=None, no_sync: bool = True) -> None:
    for step in range(STEPS):
        x, y = batch(step, n=16)
        shard = slice(rank * 16 // world, (rank + 1) * 16 // world)
        opt.zero_grad()
        if wrapped is None:
            losses = model.losses(x[shard], y[shard])
        else:
            # DDP must not all-reduce on its own: OSGD averages the per-task gradients itself.
            # OSGD's torch.autograd.grad never fires DDP's hooks, so no_sync() is optional.
            with wrapped.no_sync() if no_sync else contextlib.nullcontext():
                features = wrapped(x[shard])
            losses = [((head(features).squeeze(-1) - y[shard, i]) ** 2).mean() for i, head in enumerate(model.heads)]
        opt.backward(losses)
        opt.step()


def worker(rank: int, init_file: str, out_dir: str, method: str, ddp: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(0)
        model = make_model()
        opt = OSGD(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), method=method)
        wrapped = DistributedDataParallel(model.trunk) if ddp != "none" else None
        train(model, opt, rank, WORLD, wrapped, no_sync=ddp == "ddp_no_sync")
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out_dir, f"rank{rank}.safetensors")
        )
        # Tear down in the documented order: DDP's reducer (which holds the group) first, then a
        # barrier so that no rank still communicates, then the group.
        del wrapped
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "ddp"), [("osgd", "none"), ("norm", "none"), ("osgd_norm", "ddp_no_sync"), ("osgd", "ddp")]
)
def test_two_processes_equal_one_process_on_the_whole_batch(tmp_path: Path, method: str, ddp: str) -> None:
    """Plain processes, and a DDP-wrapped trunk with and without no_sync(): DDP never double-counts."""
    mp.spawn(worker, args=(str(tmp_path / "init"), str(tmp_path), method, ddp), nprocs=WORLD, join=True)

    single = make_model()
    opt = OSGD(torch.optim.SGD(single.parameters(), lr=0.1, momentum=0.9), method=method)
    train(single, opt, rank=0, world=1)

    expected = single.state_dict()
    for rank in range(WORLD):
        got = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        for name, value in expected.items():
            torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-6, msg=f"rank {rank}: {name}")
    # Averaging per-task gradients is what makes it exact: the local combination differs.
    local = make_model()
    opt = OSGD(torch.optim.SGD(local.parameters(), lr=0.1, momentum=0.9), method=method)
    train(local, opt, rank=0, world=WORLD)
    assert not torch.allclose(local.trunk[0].weight, expected["trunk.0.weight"], rtol=1e-5, atol=1e-6)
