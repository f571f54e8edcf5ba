"""The three commands end to end, and a clear one-line error for every kind of bad input."""

from __future__ import annotations

import dataclasses
import json
import shutil
import struct
from pathlib import Path

import pytest
import torch

from tests.scripts import ROOT
from tests.timm_anytime.runs import tiny_args, weights
from timm_anytime.cli.evaluate import main as evaluate_main
from timm_anytime.cli.report import main as report_main
from timm_anytime.cli.train import main as train_main


def _fails(main, argv: list[str], capsys: pytest.CaptureFixture, *needles: str, status: int = 2) -> str:
    assert main(argv) == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1, f"expected one line, got:\n{err}"
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    return err


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("cli") / "run"
    assert train_main(tiny_args(run, "--method=osgd", "--epochs=1")) == 0
    return run


def test_train_eval_report(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert (trained / "model.safetensors").is_file()
    assert evaluate_main([str(trained), "--latency-inputs=5", "--device=cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "top-1 err" in out
    assert len(out.strip().splitlines()) == 2 + 3
    result = json.loads((trained / "eval.json").read_text())
    assert [s["stage"] for s in result["stages"]] == [1, 2, 3]
    assert result["latency_inputs"] == 5
    assert result["eval_inputs"] == 80
    flops = [s["flops"] for s in result["stages"]]
    assert flops == sorted(flops)
    assert flops[0] > 0
    assert report_main([str(trained), "--output", str(tmp_path / "report")]) == 0
    for name in ("report.md", "stage_error.png", "error_vs_flops.png", "deadlines.png", "learning_curves.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0, name
    assert f"| {trained.name} | " in (tmp_path / "report" / "report.md").read_text()  # its convergence row


def test_config_file_and_flags(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("method: sgd\nepochs: 5\nlr: 0.3\n")
    run = tmp_path / "run"
    assert train_main(["--config", str(config), *tiny_args(run, "--epochs=1")]) == 0
    saved = (run / "config.yaml").read_text()
    assert "method: sgd" in saved
    assert "epochs: 1" in saved
    assert "lr: 0.05" in saved  # tiny_args sets --lr too


def test_every_example_config_is_valid() -> None:
    import timm

    import timm_anytime  # noqa: F401
    from timm_anytime.train.config import TrainConfig

    configs = sorted((ROOT / "examples" / "configs").glob("*.yaml"))
    assert len(configs) >= 5
    for path in configs:
        cfg = TrainConfig.load(path)
        assert timm.is_model(cfg.model), f"{path.name}: {cfg.model}"


# ---------------------------------------------------------------------- bad input
def test_unknown_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = [*tiny_args(tmp_path / "r"), "--model=anytime_cifar_resnet20_w12"]
    _fails(train_main, argv, capsys, "unknown model 'anytime_cifar_resnet20_w12'", "anytime_cifar_resnet20_w124")
    # checked with the settings, before any data is read: a missing data folder does not mask it
    argv += ["--dataset=cifar10", f"--data-dir={tmp_path / 'nowhere'}"]
    _fails(train_main, argv, capsys, "unknown model 'anytime_cifar_resnet20_w12'")
    # a part left out: the model holding every given part comes first, before similar spellings
    argv = [*tiny_args(tmp_path / "r3"), "--model=anytime_resnet20_w124"]
    _fails(train_main, argv, capsys, "Did you mean anytime_cifar_resnet20_w124,")


def test_missing_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = [*tiny_args(tmp_path / "r"), "--dataset=cifar10", f"--data-dir={tmp_path / 'nowhere'}"]
    _fails(train_main, argv, capsys, "no cifar10 under", "--download")
    argv = [*tiny_args(tmp_path / "r2"), "--dataset=cifar10"]
    _fails(train_main, argv, capsys, "needs --data-dir")
    (tmp_path / "tree" / "train").mkdir(parents=True)
    argv = [a for a in tiny_args(tmp_path / "r3") if "per-class" not in a]
    argv += ["--dataset=imagefolder", f"--data-dir={tmp_path / 'tree'}"]
    _fails(train_main, argv, capsys, "no val/, validation/ or test/ split")


def test_existing_run_is_never_overwritten(trained: Path, capsys: pytest.CaptureFixture) -> None:
    before = weights(trained)
    _fails(train_main, tiny_args(trained, "--method=osgd", "--epochs=1"), capsys, "already holds a run", "--resume")
    _fails(train_main, tiny_args(trained, "--method=sgd", "--resume"), capsys, "method: 'osgd' -> 'sgd'")
    after = weights(trained)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_resume_of_a_folder_without_a_run_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    for argv in (["--output", str(tmp_path / "empty"), "--resume"], tiny_args(tmp_path / "absent", "--resume")):
        _fails(train_main, argv, capsys, "holds no run to resume (no config.yaml)")
    assert not (tmp_path / "absent").exists()
    assert not any((tmp_path / "empty").iterdir())


def test_overwrite_replaces_the_whole_run(trained: Path, tmp_path: Path) -> None:
    run = tmp_path / "again"
    shutil.copytree(trained, run)
    (run / "stray.txt").write_text("from the old run")
    assert train_main(tiny_args(run, "--method=sgd", "--epochs=1", "--overwrite")) == 0
    assert not (run / "stray.txt").exists()  # the old run is gone, not mixed into the new one
    assert "method: sgd" in (run / "config.yaml").read_text()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_resume_needs_only_the_run_folder(trained: Path) -> None:
    from timm_anytime.train.config import TrainConfig, config_from_args

    saved = TrainConfig.load(trained / "config.yaml")
    resumed = config_from_args(["--output", str(trained), "--resume"])
    assert resumed == dataclasses.replace(saved, resume=True)
    assert config_from_args(["--output", str(trained), "--resume", "--epochs=9"]).epochs == 9  # flags still win


def test_resume_records_new_display_settings(tmp_path: Path) -> None:
    from timm_anytime.train.config import TrainConfig

    run = tmp_path / "r"
    assert train_main(tiny_args(run, "--epochs=1")) == 0
    assert train_main(["--output", str(run), "--resume", "--name=renamed", "--eval-every=3", "--no-progress"]) == 0
    saved = TrainConfig.load(run / "config.yaml")
    assert (saved.name, saved.eval_every, saved.resume) == ("renamed", 3, False)  # the report label follows


def test_bad_settings(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = str(tmp_path / "r")
    _fails(train_main, [*tiny_args(Path(run)), "--method=sgd", "--priority", "1", "2"], capsys, "priority applies to")
    _fails(train_main, [*tiny_args(Path(run)), "--method=osgd", "--priority", "1", "3"], capsys, "every stage once")
    _fails(train_main, [*tiny_args(Path(run)), "--method=osgd", "--priority", "2", "1"], capsys, "has 3 stage(s)")
    _fails(train_main, [*tiny_args(Path(run)), "--grad-accum=3"], capsys, "multiple of grad_accum")
    argv = [*tiny_args(Path(run)), "--method=osgd", "--stage-weights", "1", "1", "1"]
    _fails(train_main, argv, capsys, "stage_weights applies to the methods sgd only")
    _fails(train_main, [*tiny_args(Path(run)), "--method=sgd", "--reduction=mean"], capsys, "reduction applies to")
    bad = tmp_path / "bad.yaml"
    bad.write_text("methd: osgd\n")
    _fails(train_main, ["--config", str(bad), *tiny_args(Path(run))], capsys, "unknown setting(s) ['methd']")
    bad.write_text("method: [osgd\n")
    _fails(train_main, ["--config", str(bad), *tiny_args(Path(run))], capsys, "not valid YAML")
    assert not Path(run).exists()


def test_nan_loss_stops_with_advice(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = tiny_args(tmp_path / "r", "--method=sgd", "--lr=1e30", "--momentum=0.99")
    _fails(train_main, argv, capsys, "training loss per stage became", "lower --lr", status=1)


def test_corrupt_checkpoint_and_missing_results(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.yaml").write_text((trained / "config.yaml").read_text())
    data = (trained / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])  # truncated download
    _fails(evaluate_main, [str(broken), "--no-progress"], capsys, "not a readable safetensors file", "truncated")
    _fails(evaluate_main, [str(tmp_path)], capsys, "is not a run folder")
    _fails(report_main, [str(broken), "--output", str(tmp_path / "rep")], capsys, "run `anytime-eval")
    # results that exist but cannot be read: a one-line error naming the file (was a raw traceback)
    (broken / "eval.json").write_text("{")
    (broken / "eval_outputs.safetensors").write_bytes(b"junk")
    _fails(
        report_main, [str(broken), "--output", str(tmp_path / "rep")], capsys, "eval.json is not valid JSON", "re-run"
    )
    (broken / "eval.json").write_text("{}")
    argv = [str(broken), "--output", str(tmp_path / "rep")]
    _fails(report_main, argv, capsys, "eval_outputs.safetensors is not a readable safetensors file", "re-run")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text((trained / "config.yaml").read_text().replace("width: 0.5", "width: 1.0"))
    (other / "model.safetensors").write_bytes(data)
    _fails(evaluate_main, [str(other), "--no-progress"], capsys, "do not fit")


def tensorboard_scalars(run: Path) -> dict[tuple[str, int], float]:
    """Every scalar in the run's TensorBoard event files, read as TFRecords: {(tag, step): value}."""
    try:
        from tensorboard.compat.proto import event_pb2
    except ImportError:
        from tensorboardX.proto import event_pb2
    scalars = {}
    for path in run.rglob("events.out.tfevents*"):
        data, offset = path.read_bytes(), 0
        while offset < len(data):  # record: u64 length, u32 crc, payload, u32 crc
            (length,) = struct.unpack_from("<Q", data, offset)
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars[(value.tag, event.step)] = value.simple_value
    return scalars


def test_trackers_log_the_metrics_of_every_epoch_into_the_run_folder(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None:
        pytest.skip("needs tensorboard or tensorboardX (requirements/dev.txt installs tensorboardX)")
    run = tmp_path / "r"
    assert train_main(tiny_args(run, "--epochs=2", "--eval-every=1", "--log-with", "tensorboard")) == 0
    logged = tensorboard_scalars(run)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    expected = {}
    for record in records:
        for key, value in record.items():
            if isinstance(value, list):
                expected.update({(f"{key}/stage{s + 1}", record["epoch"]): v for s, v in enumerate(value)})
            elif isinstance(value, int | float) and key != "epoch":
                expected[(key, record["epoch"])] = value
    assert ("eval_top1_err/stage3", 2) in expected  # what the run should log
    assert ("lr", 1) in expected
    assert set(expected) <= set(logged), sorted(set(expected) - set(logged))
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key  # stored as float32


@pytest.mark.filterwarnings("ignore:`log_with=:UserWarning")  # Accelerate's own warning, before ours
def test_a_tracker_that_is_not_installed_stops_the_run_before_it_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here: this test needs a tracker that is not")
    argv = tiny_args(tmp_path / "r", "--epochs=1", "--log-with", "wandb")
    _fails(train_main, argv, capsys, "tracker(s) ['wandb'] are not installed", "pip install wandb")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", ["evaluate", "push", "queue", "report"])
def test_help_states_each_default_once_and_never_none(command: str) -> None:
    """``--help`` shows a flag's default where it means something, and once: not "(default: None)"
    for a flag that is off unless given, nor a second "(default: ...)" after one written in words."""
    import importlib
    import re

    help_text = importlib.import_module(f"timm_anytime.cli.{command}").build_parser().format_help()
    flat = re.sub(r"\s+", " ", help_text)
    assert "(default: None)" not in flat
    assert not re.search(r"\(default: [^)]*\) \(default:", flat), flat
