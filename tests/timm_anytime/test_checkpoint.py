"""Checkpoints without pickle: exact round trips of real training state, atomic replacement."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn

from timm_anytime.train import checkpoint
from timm_anytime.train.checkpoint import (
    CheckpointError,
    load_state,
    load_weights,
    recover_checkpoint,
    save_checkpoint,
)


def _trained(opt: str) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    optimizer = create_optimizer_v2(model, opt=opt, lr=0.1, weight_decay=1e-4)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(16, 4)).square().mean().backward()
        optimizer.step()
    return model, optimizer


def _assert_same(a, b) -> None:
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype
        assert torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype
        assert np.array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    else:
        assert a == b


@pytest.mark.parametrize("opt", ["momentum", "adamw", "lamb"])
def test_round_trip_of_optimizer_scheduler_and_rng_state(tmp_path: Path, opt: str) -> None:
    model, optimizer = _trained(opt)
    scheduler, _ = create_scheduler_v2(optimizer, sched="multistep", num_epochs=10, decay_milestones=[3, 6])
    scheduler.step(4)
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},  # noqa: NPY002
        "misc": {"tuple": (1, 2.5, "x", None, True), "dtype": torch.float16, 3: [1, {"a": 2}]},
    }
    save_checkpoint(tmp_path / "ckpt", model, state, {"model": "test"})
    loaded = load_state(tmp_path / "ckpt")
    python = loaded["rng"].pop("python")
    expected_python = state["rng"].pop("python")
    assert python[0] == expected_python[0]
    assert tuple(python[1]) == expected_python[1]
    _assert_same(state, loaded)
    # the loaded state drives a real optimizer to the same next step
    other_model, other = _trained(opt)
    other.load_state_dict(loaded["optimizer"])
    for opt_, m in ((optimizer, model), (other, other_model)):
        opt_.zero_grad()
        torch.manual_seed(1)
        m(torch.randn(16, 4)).square().mean().backward()
        opt_.step()
    for p, q in zip(model.parameters(), other_model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_weights_load_into_a_fresh_model(tmp_path: Path) -> None:
    model, _ = _trained("sgd")
    save_checkpoint(tmp_path / "ckpt", model, {}, {"model": "mlp"})
    fresh = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    assert load_weights(tmp_path / "ckpt", fresh)["model"] == "mlp"
    for (name, p), q in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = _trained("sgd")
    save_checkpoint(tmp_path / "ckpt", model, {"epoch": 1}, {})

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(tmp_path / "ckpt", model, {"epoch": 2}, {})
    monkeypatch.undo()
    assert load_state(tmp_path / "ckpt") == {"epoch": 1}


def test_a_save_cut_between_its_renames_is_mended_from_the_old_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = _trained("sgd")
    folder = tmp_path / "ckpt"
    assert not recover_checkpoint(folder)  # nothing saved yet: nothing to mend
    save_checkpoint(folder, model, {"epoch": 1}, {})
    real_replace = os.replace

    def killed_before_the_new_copy_is_in_place(source, target) -> None:
        if str(source).endswith(".partial"):
            raise KeyboardInterrupt
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", killed_before_the_new_copy_is_in_place)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(folder, model, {"epoch": 2}, {})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.old", "ckpt.partial"]
    save_checkpoint(folder, model, {"epoch": 3}, {})  # the next save, say, with no resume in between
    assert load_state(folder) == {"epoch": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    monkeypatch.setattr(os, "replace", killed_before_the_new_copy_is_in_place)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(folder, model, {"epoch": 4}, {})
    monkeypatch.undo()
    assert recover_checkpoint(folder)
    assert load_state(folder) == {"epoch": 3}
    assert not recover_checkpoint(folder)  # in place: nothing more to do


def test_corrupt_or_incomplete_state_is_reported(tmp_path: Path) -> None:
    model, _ = _trained("sgd")
    save_checkpoint(tmp_path / "ckpt", model, {"epoch": 1, "t": torch.ones(3)}, {})
    (tmp_path / "ckpt" / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_state(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "state.safetensors").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        load_state(tmp_path / "ckpt")
    with pytest.raises(TypeError, match="without pickle"):
        save_checkpoint(tmp_path / "other", model, {"f": object()}, {})
