"""examples/calibrate_norm_scale.py measures |g_i| / sqrt(d_i) of each stage along an SGD run.

The reference is independent of OSGD and of the models' reach masks: each stage's loss
differentiated on its own in float64, and d_i counted as the elements that get a non-zero gradient
from that loss on random 32x32 inputs (on 8x8 digits, some kernel taps of the last stage only ever
see padding; at 32x32 every element a stage reads gets a gradient)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.scripts import load_script
from timm_anytime.data import InMemoryLoader
from timm_anytime.models.anytime import stage_logits
from timm_anytime.train.config import config_from_args
from timm_anytime.train.loaders import load_sources
from timm_anytime.train.trainer import create_model

from .runs import tiny_args

calibrate = load_script("examples/calibrate_norm_scale.py")


def reference_first_step(argv: list[str]) -> list[float]:
    """Stage i's RMS gradient per parameter at the first step, in float64, without OSGD."""
    cfg = config_from_args(argv)
    torch.manual_seed(cfg.seed)
    sources = load_sources(cfg, progress=False)
    model = create_model(cfg, sources.num_classes, sources.in_chans).train()
    data = sources.spec
    loader = InMemoryLoader(
        sources.train, cfg.batch_size, train=True, mean=data.mean, std=data.std, padding=data.padding,
        flip=data.flip, drop_last=True, seed=cfg.seed, dtype=torch.float64,
    )  # fmt: skip
    model.double()
    params = list(model.parameters())

    def stage_grads(images: torch.Tensor, labels: torch.Tensor) -> list[list[torch.Tensor]]:
        return [
            torch.autograd.grad(F.cross_entropy(logits, labels), params, retain_graph=True, materialize_grads=True)
            for logits in stage_logits(model, images)
        ]

    first = stage_grads(*next(iter(loader)))
    noise = torch.randn(40, sources.in_chans, 32, 32, dtype=torch.float64)
    reached = [[g != 0 for g in grads] for grads in stage_grads(noise, torch.arange(40) % sources.num_classes)]
    rms = []
    for grads, masks in zip(first, reached, strict=True):
        d = sum(int(m.sum()) for m in masks)
        rms.append(float(torch.sqrt(sum((g**2).sum() for g in grads)) / d**0.5))
    return rms


def test_first_step_matches_per_stage_float64_gradients(tmp_path: Path) -> None:
    argv = tiny_args(tmp_path / "run")
    rows = calibrate.measure(argv, steps=6)  # 4 steps per epoch: crosses an epoch boundary
    assert len(rows) == 6
    assert all(len(row) == 3 for row in rows)
    assert rows[0] == pytest.approx(reference_first_step(argv), rel=1e-4)
    assert rows[1] != rows[0]  # it trains: later steps see other weights and batches


def test_main_prints_a_calibrated_c(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.setattr("sys.argv", ["calibrate_norm_scale.py", "--steps=2", *tiny_args(tmp_path / "run")])
    calibrate.main()
    out = capsys.readouterr()
    assert "calibrated C (median over 2 steps and 3 stages)" in out.out
    assert "--norm-scale" in out.err
