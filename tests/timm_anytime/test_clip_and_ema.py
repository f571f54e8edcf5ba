"""Gradient clipping (``--clip-grad``) and the weight average (``--model-ema``) in the trainer,
checked against closed forms: the norm of one clipped SGD step, and the EMA recurrence in float64."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.timm_anytime.runs import tiny_config, weights
from timm_anytime.train import Trainer, config_from_args

# One step per epoch (160 training digits, batch 160), plain SGD (timm's "momentum" at 0, not Nesterov):
# the step is -lr * (clipped) gradient.
ONE_PLAIN_STEP = dict(
    opt="momentum", batch_size=160, epochs=1, momentum=0.0, weight_decay=0.0, lr=1.0, eval_per_class=2
)


def _parameter_step(cfg) -> torch.Tensor:
    """All parameters' change over the run, flattened (buffers such as BatchNorm statistics excluded)."""
    trainer = Trainer(cfg)
    names = [name for name, _ in trainer.model.named_parameters()]
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    after = weights(trainer.fit())
    return torch.cat([(after[name].double() - before[name].double()).flatten() for name in names])


@pytest.mark.parametrize("method", ["sgd", "osgd"])
def test_clip_norm_bounds_the_whole_step_at_lr_times_clip(tmp_path: Path, method: str) -> None:
    # A fresh network's gradient has a norm near 1 or more: at 1e-2 the clip is surely active, and one
    # SGD step then moves the parameters by exactly lr * clip_grad (OSGD: its combined direction, clipped).
    step = _parameter_step(tiny_config(tmp_path / method, method=method, clip_grad=1e-2, **ONE_PLAIN_STEP))
    assert step.norm().item() == pytest.approx(1.0 * 1e-2, rel=1e-3)
    unclipped = _parameter_step(tiny_config(tmp_path / f"{method}_free", method=method, **ONE_PLAIN_STEP))
    assert unclipped.norm().item() > 10 * 1e-2  # so the bound above came from the clip


def test_clip_value_bounds_every_element_of_the_step(tmp_path: Path) -> None:
    step = _parameter_step(tiny_config(tmp_path / "value", clip_grad=1e-4, clip_mode="value", **ONE_PLAIN_STEP))
    assert step.abs().max().item() == pytest.approx(1e-4, rel=1e-3)  # clipped elements sit at the bound
    assert (step.abs() <= 1e-4 * (1 + 1e-3)).all()


def test_clip_agc_trains(tmp_path: Path) -> None:
    step = _parameter_step(tiny_config(tmp_path / "agc", clip_grad=0.01, clip_mode="agc", **ONE_PLAIN_STEP))
    assert torch.isfinite(step).all()
    assert step.abs().max() > 0


def test_model_ema_is_the_exponential_average_of_the_weights_after_every_step(tmp_path: Path) -> None:
    decay = 0.7
    trainer = Trainer(tiny_config(tmp_path / "ema", method="osgd", model_ema=True, model_ema_decay=decay))
    assert trainer.ema is not None
    seen: list[dict[str, torch.Tensor]] = []
    update = trainer.ema.update

    def record_then_update(model, step=None):  # reads the trained model itself, not what the trainer passes
        seen.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})
        update(model, step=step)

    trainer.ema.update = record_then_update
    run = trainer.fit()
    assert len(seen) == 2 * 4  # 2 epochs of 4 steps
    reference = {k: v.double() if v.is_floating_point() else v for k, v in seen[0].items()}  # step 1: a copy
    for state in seen[1:]:
        for name, value in state.items():
            if value.is_floating_point():
                reference[name] = decay * reference[name] + (1 - decay) * value.double()
            else:  # integer buffers (num_batches_tracked) are copied
                reference[name] = value
    saved = weights(run, "model_ema.safetensors")
    assert saved.keys() == reference.keys()
    for name, value in reference.items():
        torch.testing.assert_close(saved[name].to(value.dtype), value, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(saved["conv1.weight"], weights(run)["conv1.weight"])  # an average, not the last weights
    record = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert len(record["ema_eval_top1_err"]) == len(record["eval_top1_err"]) == 3
    assert len(record["ema_eval_top5_err"]) == 3
    assert (run / "checkpoint" / "model_ema.safetensors").is_file()


def test_model_ema_does_not_change_the_trained_weights(tmp_path: Path) -> None:
    """The average only watches: the same run with and without it ends with the same final weights,
    bit for bit (so a run can add --model-ema and still be compared with one that did not)."""
    plain = weights(Trainer(tiny_config(tmp_path / "plain", method="osgd")).fit())
    watched = weights(Trainer(tiny_config(tmp_path / "watched", method="osgd", model_ema=True)).fit())
    assert plain.keys() == watched.keys()
    for name, value in plain.items():
        assert torch.equal(value, watched[name]), name


def test_flags_reach_the_config_and_bad_values_are_refused(tmp_path: Path) -> None:
    cfg = config_from_args(
        [
            "--dataset=digits",
            f"--output={tmp_path}",
            "--clip-grad=0.5",
            "--clip-mode=agc",
            "--model-ema",
            "--model-ema-decay=0.99",
            "--model-ema-warmup",
        ]
    )
    assert (cfg.clip_grad, cfg.clip_mode, cfg.model_ema, cfg.model_ema_decay, cfg.model_ema_warmup) == (
        0.5,
        "agc",
        True,
        0.99,
        True,
    )
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="clip_grad must be a positive number"):
            tiny_config(tmp_path / "bad", clip_grad=bad)
    with pytest.raises(ValueError, match="clip_mode must be one of norm, value, agc"):
        tiny_config(tmp_path / "bad", clip_mode="l1")
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="model_ema_decay must lie strictly between 0 and 1"):
            tiny_config(tmp_path / "bad", model_ema_decay=bad)
