"""Where a run's weights start (``--pretrained``, ``--initial-checkpoint``), checked against the
files themselves: a run at lr 1e-9 ends where it started, so its parameters must equal the
shipped or given weights (timm's adaptations written out: the first convolution summed over RGB
for one input channel, new heads for new classes); the record names the file and its SHA-256,
computed here with hashlib."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from tests.timm_anytime.runs import interrupt_in_epoch, tiny_args, tiny_config, weights
from timm_anytime.models.pretrained import WEIGHTS_DIR, PretrainedWeightsError
from timm_anytime.train import Trainer, config_from_args, train
from timm_anytime.train.checkpoint import CheckpointError

TAG = "anytime_cifar_resnet20_w124.osgd_cifar10_e100"
STILL = dict(lr=1e-9, epochs=1, eval_per_class=2)  # one epoch that barely moves the weights


def _parameters(run: Path) -> dict[str, torch.Tensor]:
    """The trained parameters (no BatchNorm running statistics: those move in any training epoch)."""
    return {k: v for k, v in weights(run).items() if not k.endswith(("running_mean", "running_var", "_tracked"))}


def _environment(run: Path) -> dict:
    return json.loads((run / "environment.jsonl").read_text().splitlines()[0])


def test_pretrained_fine_tunes_a_shipped_checkpoint_on_one_channel_digits(tmp_path: Path) -> None:
    run = train(tiny_config(tmp_path / "ft", model=TAG, model_kwargs={}, pretrained=True, **STILL))
    shipped = load_file(str(WEIGHTS_DIR / TAG / "model.safetensors"))
    trained = _parameters(run)
    # timm's adapt_input_conv for one channel: the RGB filters summed
    torch.testing.assert_close(trained["conv1.weight"], shipped["conv1.weight"].sum(1, keepdim=True), atol=1e-5, rtol=0)
    for key, value in trained.items():
        if key != "conv1.weight":
            torch.testing.assert_close(value, shipped[key], atol=1e-5, rtol=0, msg=key)  # heads too: 10 classes
    record = _environment(run)["initial_weights"]
    assert record["pretrained"] == TAG
    assert record["sha256"] == hashlib.sha256((WEIGHTS_DIR / TAG / "model.safetensors").read_bytes()).hexdigest()


def test_pretrained_with_other_classes_keeps_the_body_and_starts_new_heads(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for label in ("cat", "dog"):
            folder = tmp_path / "data" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    cfg = tiny_config(
        tmp_path / "run",
        model=TAG,
        model_kwargs={},
        pretrained=True,
        dataset="imagefolder",
        data_dir=str(tmp_path / "data"),
        train_per_class=None,
        eval_per_class=None,
        batch_size=4,
        eval_batch_size=4,
        workers=0,
        lr=1e-9,
        epochs=1,
    )
    trained = _parameters(train(cfg))
    shipped = load_file(str(WEIGHTS_DIR / TAG / "model.safetensors"))
    for key, value in trained.items():
        if key.startswith("fc."):
            assert value.shape[0] == 2, key  # two classes: new heads
        else:
            torch.testing.assert_close(value, shipped[key], atol=1e-5, rtol=0, msg=key)


def test_initial_checkpoint_starts_from_a_file_or_a_run_folder_and_records_its_hash(tmp_path: Path) -> None:
    first = train(tiny_config(tmp_path / "first", epochs=1))
    file = first / "model.safetensors"
    for source in (file, first):
        run = train(tiny_config(tmp_path / f"from_{source.name}", initial_checkpoint=str(source), **STILL))
        expected = {k: v for k, v in load_file(str(file)).items() if k in _parameters(run)}
        for key, value in _parameters(run).items():
            torch.testing.assert_close(value, expected[key], atol=1e-6, rtol=0, msg=key)
        record = _environment(run)["initial_weights"]
        assert record == {"initial_checkpoint": str(file), "sha256": hashlib.sha256(file.read_bytes()).hexdigest()}
    cfg = config_from_args(tiny_args(tmp_path / "flags", f"--initial-checkpoint={file}"))
    assert cfg.initial_checkpoint == str(file)
    assert _environment(first).get("initial_weights") is None  # a random start records nothing


def test_a_resume_does_not_need_the_initial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = train(tiny_config(tmp_path / "first", epochs=1))
    start = tmp_path / "start.safetensors"
    start.write_bytes((first / "model.safetensors").read_bytes())
    settings = dict(initial_checkpoint=str(start), epochs=2)
    interrupt_in_epoch(tiny_config(tmp_path / "run", **settings), 1, monkeypatch)  # in the second epoch
    start.unlink()  # gone: the run's own checkpoint is what a resume needs
    run = train(tiny_config(tmp_path / "run", resume=True, **settings))
    assert (run / "model.safetensors").is_file()


def test_bad_initial_weights_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    pickle_file = tmp_path / "weights.pth"
    pickle_file.write_bytes(b"not opened")
    wrong = tmp_path / "wrong.safetensors"
    save_file({"fc.0.weight": torch.zeros(3, 3)}, str(wrong))
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 16)
    for source, error, message in [
        (pickle_file, ValueError, "only safetensors weights are loaded"),
        (tmp_path / "missing.safetensors", FileNotFoundError, "does not exist"),
        (tmp_path, FileNotFoundError, "a folder without model.safetensors"),
        (wrong, CheckpointError, "do not fit this NestedResNet"),
        (corrupt, CheckpointError, "not a readable safetensors file"),
    ]:
        out = tmp_path / "runs" / source.name
        with pytest.raises(error, match=message):
            Trainer(tiny_config(out, initial_checkpoint=str(source)))
        assert not out.exists()  # nothing written
    with pytest.raises(ValueError, match="choose one"):
        tiny_config(tmp_path / "both", pretrained=True, initial_checkpoint=str(wrong))
    with pytest.raises(ValueError, match=r"--pretrained: No pretrained weights exist for cifar_resnet20.*ships"):
        Trainer(tiny_config(tmp_path / "none", model="cifar_resnet20", pretrained=True))
    # the shipped default weights of the tiny run's model are full width, the tiny model half
    with pytest.raises(PretrainedWeightsError, match=r"do not fit anytime_cifar_resnet20_w124 \(wrong shape"):
        Trainer(tiny_config(tmp_path / "half", pretrained=True))
    assert not (tmp_path / "none").exists()
    assert not (tmp_path / "half").exists()
