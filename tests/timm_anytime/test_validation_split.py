"""A validation split held out from the training images: which images, and errors on them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import timm_anytime  # noqa: F401
from tests.timm_anytime.runs import CIFAR_CLASSES, MODEL, tiny_config, toy_cifar, weights
from timm_anytime.data import InMemoryLoader, calibration_split, load_cifar, load_digits, load_held_out
from timm_anytime.train import TrainConfig, train


def test_held_out_images_follow_the_training_subset_of_each_class() -> None:
    train_all, _, _ = load_digits()
    held_out = load_held_out("digits", None, trained_per_class=16, per_class=10)
    assert len(held_out) == 100
    for c in range(10):  # direct: the 17th to 26th image of each class, in dataset order
        expected = train_all.images[torch.nonzero(train_all.labels == c).flatten()[16:26]]
        assert torch.equal(held_out.images[held_out.labels == c], expected)


def test_held_out_cifar_images_from_a_folder_tree_are_the_files_after_the_trained_ones(tmp_path: Path) -> None:
    root = toy_cifar(tmp_path / "cifar", per_class=6)
    held_out = load_held_out("cifar10", root, trained_per_class=4, progress=False)
    trained, _, _ = load_cifar("cifar10", root, train_per_class=4, progress=False)
    assert trained is not None
    assert len(held_out) == 20
    for label, name in enumerate(CIFAR_CLASSES):  # decoded here with PIL, files in name order
        files = sorted((root / "train" / name).iterdir())
        decoded = [torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files]
        assert torch.equal(held_out.images[held_out.labels == label], torch.stack(decoded[4:]))
        assert torch.equal(trained.images[trained.labels == label], torch.stack(decoded[:4]))
    with pytest.raises(ValueError, match="train has no images after the first 6 of each class"):
        load_held_out("cifar10", root, trained_per_class=6, progress=False)
    with pytest.raises(ValueError, match="not 'imagefolder': pass your own validation loader"):
        load_held_out("imagefolder", root, trained_per_class=4)
    with pytest.raises(ValueError, match="cifar100 has 100 classes, found 10 class folders"):
        load_cifar("cifar100", root, progress=False)


def test_calibration_split_never_uses_images_the_model_trained_on() -> None:
    _, test_all, _ = load_digits()
    # Trained on a subset: held-out training images calibrate, the whole test split measures.
    calibration, test = calibration_split("digits", None, trained_per_class=16, per_class=10)
    assert torch.equal(calibration.images, load_held_out("digits", None, trained_per_class=16, per_class=10).images)
    assert torch.equal(test.images, test_all.images)
    # Trained on every training image: the first 20 test images of each class calibrate, the rest measure.
    calibration, test = calibration_split("digits", None, trained_per_class=None, per_class=20)
    assert len(calibration) == 200
    assert len(calibration) + len(test) == len(test_all)
    for c in range(10):  # direct: split each class's test images, in dataset order
        mine = torch.nonzero(test_all.labels == c).flatten()
        assert torch.equal(calibration.images[calibration.labels == c], test_all.images[mine[:20]])
        assert torch.equal(test.images[test.labels == c], test_all.images[mine[20:]])
    with pytest.raises(ValueError, match="at least 1"):
        calibration_split("digits", None, trained_per_class=None, per_class=0)
    with pytest.raises(ValueError, match="nothing left after the first 1000 images of each class"):
        calibration_split("digits", None, trained_per_class=None, per_class=1000)


def test_validation_errors_are_logged_and_match_a_direct_evaluation(tmp_path: Path) -> None:
    run = train(tiny_config(tmp_path / "run", val_per_class=10, epochs=1))
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert len(record["val_top1_err"]) == len(record["eval_top1_err"]) == 3
    data = [json.loads(line) for line in (run / "environment.jsonl").read_text().splitlines()][-1]["data"]
    assert data["val_images"] == 100
    assert data["val_per_class"] == 10
    model = timm.create_model(MODEL, num_classes=10, in_chans=1, width=0.5)
    model.load_state_dict(weights(run))
    model.eval()
    held_out = load_held_out("digits", None, trained_per_class=16, per_class=10)
    _, _, spec = load_digits()
    images, labels = next(iter(InMemoryLoader(held_out, 100, train=False, mean=spec.mean, std=spec.std)))
    with torch.no_grad():
        for k in range(1, 4):
            wrong = (model.set_active_stage(k)(images).argmax(1) != labels).double().mean()
            assert record["val_top1_err"][k - 1] == pytest.approx(100 * float(wrong), abs=1e-3)


def test_validation_needs_a_training_subset() -> None:
    with pytest.raises(ValueError, match="set train_per_class too"):
        TrainConfig(dataset="digits", val_per_class=10)
    with pytest.raises(ValueError, match="positive integer"):
        TrainConfig(dataset="digits", train_per_class=10, val_per_class=0)


def test_data_settings_that_cannot_apply_are_refused_before_training(tmp_path: Path) -> None:
    from timm_anytime.train import Trainer

    with pytest.raises(ValueError, match="batch_size 500 is larger than the 160 training images"):
        Trainer(tiny_config(tmp_path / "big", batch_size=500))  # 16 digits per class
    folder = dict(dataset="imagefolder", data_dir=str(toy_cifar(tmp_path / "cifar", per_class=1)))
    with pytest.raises(ValueError, match="train_per_class / eval_per_class / val_per_class apply to the in-memory"):
        Trainer(tiny_config(tmp_path / "subset", eval_per_class=None, **folder))
    with pytest.raises(ValueError, match="/ val_per_class apply to the in-memory datasets"):
        Trainer(tiny_config(tmp_path / "val", train_per_class=1, eval_per_class=None, val_per_class=1, **folder))
    assert not any((tmp_path / name).exists() for name in ("big", "subset", "val"))
