"""Batch augmentation in the trainer: Mixup and CutMix (``--mixup``, ``--cutmix``), random erasing
(``--reprob``) and, for streamed ImageFolder trees, timm's auto-augment (``--aa``). Checked against
closed forms: the mixed images and targets written out in float64, the erased boxes, and the logged
per-stage loss of a step that barely moves the weights, recomputed with a float64 copy of the
initial network on the augmented batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from timm.data import Mixup
from timm.data.random_erasing import RandomErasing

from tests.timm_anytime.runs import MODEL, tiny_args, tiny_config, toy_cifar
from timm_anytime.train import Trainer, config_from_args
from timm_anytime.train.batch_augment import dominant_labels

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


class RecordingErasing(RandomErasing):
    """timm's RandomErasing, keeping every batch before and after."""

    calls: list[tuple[torch.Tensor, torch.Tensor]]

    def __call__(self, input):
        before = input.clone()
        after = super().__call__(input)
        self.calls.append((before, after.clone()))
        return after


def test_random_erasing_zeroes_one_box_per_image_and_the_stages_train_on_it(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "erase", method="osgd", epochs=1, lr=1e-9, reprob=1.0, remode="const")
    trainer = Trainer(cfg)
    assert trainer.random_erasing is not None
    trainer.random_erasing.__class__ = RecordingErasing
    trainer.random_erasing.calls = []
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    run = trainer.fit()
    reference = timm.create_model(MODEL, num_classes=CLASSES, in_chans=1, width=0.5).double().train()
    reference.load_state_dict(initial)
    loaded = trainer.loaders.train
    loaded.set_epoch(0)
    total, count = torch.zeros(3, dtype=torch.float64), 0
    with torch.no_grad():
        for (before, after), (images, labels) in zip(trainer.random_erasing.calls, loaded, strict=True):
            assert torch.equal(before, images)  # erasing saw the pipeline's batch, before any mixing
            _, _, height, width = after.shape
            for image_before, image_after in zip(before, after, strict=True):
                changed = (image_before != image_after).any(0)  # [H, W]
                rows, cols = torch.nonzero(changed, as_tuple=True)
                box = torch.zeros_like(changed)
                box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
                assert torch.equal(changed, box)  # one rectangle (probability 1, one box)
                assert (image_after[:, box] == 0).all()  # "const": the normalized mean
                assert 0.02 * height * width / 2 <= int(box.sum()) <= height * width / 3 * 1.5  # rounded sides
            for stage, logits in enumerate(reference.forward_stages(after.double())):
                total[stage] += torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
            count += len(labels)
    assert _metrics(run)[0]["train_loss"] == pytest.approx((total / count).tolist(), rel=1e-4)


def test_auto_augment_applies_timms_policy_to_a_streamed_image_folder(tmp_path: Path) -> None:
    data = toy_cifar(tmp_path / "data", per_class=1)
    folder = dict(dataset="imagefolder", data_dir=str(data), train_per_class=None, eval_per_class=None)
    settings = dict(folder, batch_size=4, eval_batch_size=4, workers=0, epochs=1, model_kwargs={"width": 0.25})
    trainer = Trainer(tiny_config(tmp_path / "run", aa="rand-m9-mstd0.5-inc1", **settings))
    steps = [type(t).__name__ for t in trainer.loaders.train.dataset.transform.transforms]
    assert "RandAugment" in steps
    plain = Trainer(tiny_config(tmp_path / "plain", **settings))
    assert "RandAugment" not in [type(t).__name__ for t in plain.loaders.train.dataset.transform.transforms]
    trainer.fit()
    with pytest.raises(ValueError, match="aa 'rand-zz3' is not a timm auto-augment policy"):
        tiny_config(tmp_path / "bad", aa="rand-zz3", **folder)
    with pytest.raises(ValueError, match="applies to a streamed ImageFolder tree, not to 'digits'"):
        tiny_config(tmp_path / "bad", aa="rand-m9-mstd0.5")


def test_random_erasing_settings_and_their_errors(tmp_path: Path) -> None:
    cfg = config_from_args(tiny_args(tmp_path / "flags", "--reprob=0.25", "--remode=rand", "--recount=2"))
    assert (cfg.reprob, cfg.remode, cfg.recount) == (0.25, "rand", 2)
    erasing = Trainer(cfg).random_erasing
    assert (erasing.probability, erasing.mode, erasing.max_count) == (0.25, "rand", 2)
    assert Trainer(tiny_config(tmp_path / "none")).random_erasing is None  # off by default
    for bad, message in [
        (dict(reprob=1.5), r"reprob is a probability in \[0, 1\]"),
        (dict(reprob=0.5, remode="noise"), "remode must be one of const, rand, pixel"),
        (dict(reprob=0.5, recount=0), "recount must be a positive integer"),
    ]:
        with pytest.raises(ValueError, match=message):
            tiny_config(tmp_path / "bad", **bad)
