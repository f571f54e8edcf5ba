"""examples/stage_gradient_agreement.py: stage-gradient Gramians of a trained run, and the
first-order descent each combination gives each stage.

References: each stage's loss differentiated on its own in float64 on the run's first training
batch (no OSGD), and Alg. 2 as explicit vector Gram-Schmidt (tests/osgd/reference.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.osgd.reference import reference_osgd
from tests.scripts import load_script
from timm_anytime.data import InMemoryLoader
from timm_anytime.models.anytime import stage_logits
from timm_anytime.train import TrainConfig, train
from timm_anytime.train.checkpoint import load_weights
from timm_anytime.train.loaders import load_sources
from timm_anytime.train.trainer import create_model

from .runs import tiny_config

agreement = load_script("examples/stage_gradient_agreement.py")


def reference_first_gramian(run: Path) -> torch.Tensor:
    """The float64 Gramian of the stage gradients on the run's first training batch."""
    cfg = TrainConfig.load(run / "config.yaml")
    torch.manual_seed(cfg.seed)
    sources = load_sources(cfg, progress=False)
    model = create_model(cfg, sources.num_classes, sources.in_chans)
    load_weights(run / "model.safetensors", model)
    model.double().train()
    data = sources.spec
    loader = InMemoryLoader(
        sources.train, cfg.batch_size, train=True, mean=data.mean, std=data.std, padding=data.padding,
        flip=data.flip, drop_last=True, seed=cfg.seed, dtype=torch.float64,
    )  # fmt: skip
    images, labels = next(iter(loader))
    params = list(model.parameters())
    rows = []
    for logits in stage_logits(model, images):
        grads = torch.autograd.grad(F.cross_entropy(logits, labels), params, retain_graph=True, materialize_grads=True)
        rows.append(torch.cat([g.flatten() for g in grads]))
    J = torch.stack(rows)
    return J @ J.T


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("agreement") / "run"
    train(tiny_config(run, method="sgd", epochs=1))
    return run


def test_first_gramian_matches_per_stage_float64_gradients(trained_run: Path) -> None:
    gramians = agreement.stage_gramians(trained_run, batches=5)  # 4 batches per epoch: crosses one
    assert len(gramians) == 5
    torch.testing.assert_close(gramians[0], reference_first_gramian(trained_run), rtol=2e-4, atol=1e-7)
    assert not torch.allclose(gramians[1], gramians[0])  # another batch


@pytest.mark.parametrize("order", [None, [0, 1, 2], [1, 0, 2], [2, 1, 0]])
def test_relative_descent_is_each_stage_dot_the_combined_step(order: list[int] | None) -> None:
    J = torch.randn(3, 40, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    J[1] += J[0]  # aligned stages, as in nested networks
    step = J.sum(0) if order is None else reference_osgd(J, order)
    expected = (J @ step) / (J * J).sum(1)
    torch.testing.assert_close(agreement.relative_descent(J @ J.T, order), expected, rtol=1e-10, atol=1e-12)
    if order is not None:
        assert agreement.relative_descent(J @ J.T, order)[order[0]] == pytest.approx(1.0, abs=1e-12)


def test_main_prints_cosines_and_descents(trained_run: Path, capsys, monkeypatch) -> None:
    argv = ["stage_gradient_agreement.py", str(trained_run), "--batches=2", "--priority", "2", "1", "3"]
    monkeypatch.setattr("sys.argv", argv)
    agreement.main()
    out = capsys.readouterr().out
    assert "(2 training batches)" in out
    assert "mean cosine of the stage gradients: 1-2 " in out
    assert "sum (sgd):" in out
    assert "osgd 213:" in out


def test_a_folder_that_is_not_a_run_is_named(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("sys.argv", ["stage_gradient_agreement.py", str(tmp_path)])
    with pytest.raises(SystemExit, match="is not a run folder"):
        agreement.main()
