"""Mixup and CutMix in the trainer (``--mixup``, ``--cutmix``), checked against closed forms: the
mixed images and targets written out in float64, and the logged per-stage loss of a step that
barely moves the weights, recomputed with a float64 copy of the initial network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from timm.data import Mixup

from tests.timm_anytime.runs import MODEL, tiny_args, tiny_config
from timm_anytime.train import Trainer, config_from_args
from timm_anytime.train.mixing import dominant_labels

CLASSES = 10


class RecordingMixup(Mixup):
    """timm's Mixup, keeping every call's input batch and what it returned."""

    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]

    def __call__(self, x, target):
        before = x.clone()
        mixed, soft = super().__call__(x, target)
        self.calls.append((before, target.clone(), mixed.clone(), soft.clone()))
        return mixed, soft


def _recording(trainer: Trainer) -> RecordingMixup:
    assert trainer.mixup is not None
    trainer.mixup.__class__ = RecordingMixup
    trainer.mixup.calls = []
    return trainer.mixup


def _smoothed(labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Label-smoothed one-hot targets in float64: 1 - e + e/C on the label, e/C elsewhere."""
    target = torch.full((len(labels), CLASSES), smoothing / CLASSES, dtype=torch.float64)
    target[torch.arange(len(labels)), labels] += 1 - smoothing
    return target


def _mixup_factor(labels: torch.Tensor, soft: torch.Tensor, smoothing: float) -> float:
    """lam of a batch-mode mix, read off one image whose partner (the mirrored index) has another
    label: its own class then holds lam * (1 - e) + e / C."""
    partner = labels.flip(0)
    i = int(torch.nonzero(labels != partner)[0])
    return (float(soft[i, labels[i]]) - smoothing / CLASSES) / (1 - smoothing)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["osgd", "sgd"])
def test_mixup_trains_every_stage_on_the_mixed_images_and_soft_targets(tmp_path: Path, method: str) -> None:
    eps = 0.1
    cfg = tiny_config(tmp_path / method, method=method, epochs=1, lr=1e-9, smoothing=eps, mixup=0.4)
    trainer = Trainer(cfg)
    recorder = _recording(trainer)
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    run = trainer.fit()
    assert len(recorder.calls) == 4  # 160 digits, batch 40

    reference = timm.create_model(MODEL, num_classes=CLASSES, in_chans=1, width=0.5).double().train()
    reference.load_state_dict(initial)
    total, right, count = torch.zeros(3, dtype=torch.float64), torch.zeros(3), 0
    factors = []
    with torch.no_grad():
        for before, labels, mixed, soft in recorder.calls:
            lam = _mixup_factor(labels, soft, eps)
            factors.append(lam)
            expected_images = lam * before.double() + (1 - lam) * before.double().flip(0)
            torch.testing.assert_close(mixed.double(), expected_images, rtol=0, atol=1e-5)
            target = lam * _smoothed(labels, eps) + (1 - lam) * _smoothed(labels.flip(0), eps)
            torch.testing.assert_close(soft.double(), target, rtol=0, atol=1e-6)
            for stage, logits in enumerate(reference.forward_stages(mixed.double())):
                total[stage] += -(target * torch.log_softmax(logits, dim=-1)).sum()
                right[stage] += (logits.argmax(-1) == target.argmax(-1)).sum()
            count += len(labels)
    assert all(0 < lam < 1 for lam in factors)  # every batch was mixed (prob 1, Beta(0.4, 0.4))
    logged = _metrics(run)[0]
    # the smoothing is applied once, to the mixed targets (not again in the loss)
    assert logged["train_loss"] == pytest.approx((total / count).tolist(), rel=1e-4)
    # the training error names each mixed target's larger class (one image may flip in float32)
    expected_err = (100 - 100 * right / count).tolist()
    assert logged["train_top1_err"] == pytest.approx(expected_err, abs=100 / count + 1e-6)


def test_cutmix_pastes_a_box_of_the_mirrored_image_whose_area_matches_the_target(tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(tmp_path / "cutmix", epochs=1, cutmix=1.0))
    recorder = _recording(trainer)
    trainer.fit()
    pasted_any = False
    for before, labels, mixed, soft in recorder.calls:
        lam = _mixup_factor(labels, soft, 0.0)
        source = before.flip(0)
        from_partner = (mixed == source) & (mixed != before)  # pixels that can only have come from the partner
        inside = from_partner.any(0).any(0)  # [H, W]
        if lam < 1:
            rows, cols = torch.nonzero(inside, as_tuple=True)
            top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
            box = torch.zeros_like(inside)
            box[top:bottom, left:right] = True
            torch.testing.assert_close(mixed[:, :, box], source[:, :, box], rtol=0, atol=0)
            torch.testing.assert_close(mixed[:, :, ~box], before[:, :, ~box], rtol=0, atol=0)
            # timm corrects lam to the pasted box's actual share of the image
            assert 1 - lam == pytest.approx(float(box.double().mean()), abs=1e-6)
            pasted_any = True
        else:
            torch.testing.assert_close(mixed, before, rtol=0, atol=0)
    assert pasted_any


def test_mixup_stops_at_mixup_off_epoch(tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(tmp_path / "off", epochs=2, mixup=0.4, mixup_off_epoch=1))
    recorder = _recording(trainer)
    trainer.fit()
    first, second = recorder.calls[:4], recorder.calls[4:]
    assert len(second) == 4
    assert all(not torch.equal(before, mixed) for before, _, mixed, _ in first)
    for before, labels, mixed, soft in second:
        assert torch.equal(before, mixed)
        torch.testing.assert_close(soft.double(), _smoothed(labels, 0.0), rtol=0, atol=0)


def test_dominant_labels_are_the_indices_or_the_largest_share() -> None:
    labels = torch.tensor([3, 1, 4])
    assert torch.equal(dominant_labels(labels), labels)
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.4, 0.6], [0.5, 0.0, 0.5]])
    assert dominant_labels(soft).tolist() == [0, 2, 0]


def test_mixup_settings_from_flags_and_their_errors(tmp_path: Path) -> None:
    cfg = config_from_args(
        tiny_args(tmp_path / "flags", "--mixup=0.2", "--cutmix=1.0", "--mixup-mode=pair", "--mixup-off-epoch=1")
    )
    assert (cfg.mixup, cfg.cutmix, cfg.mixup_mode, cfg.mixup_off_epoch) == (0.2, 1.0, "pair", 1)
    assert Trainer(cfg).mixup is not None
    assert Trainer(tiny_config(tmp_path / "none")).mixup is None  # off by default, as in the paper
    for bad, message in [
        (dict(mixup=-0.2), "mixup is the alpha of a Beta"),
        (dict(cutmix=float("inf")), "cutmix is the alpha of a Beta"),
        (dict(mixup=0.2, mixup_prob=1.5), r"mixup_prob is a probability in \[0, 1\]"),
        (dict(mixup=0.2, mixup_mode="pairs"), "mixup_mode must be one of batch, pair, elem"),
        (dict(mixup=0.2, mixup_off_epoch=-1), "mixup_off_epoch must be an epoch number"),
        (dict(mixup=0.2, batch_size=39), "batch_size must be even, got 39"),
    ]:
        with pytest.raises(ValueError, match=message):
            tiny_config(tmp_path / "bad", **bad)
