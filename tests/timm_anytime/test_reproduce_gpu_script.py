"""examples/reproduce_cifar_gpu.py, run on CPU at toy size: the packed data unpacks to the same
images, every planned run is a valid anytime-train command, a campaign cut short by its budget
comes back as a checkpoint that the next call resumes, and finished runs are collected."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest
import timm

import timm_anytime  # noqa: F401
from tests.scripts import load_script
from tests.timm_anytime.runs import toy_cifar
from timm_anytime.data.memory import load_image_folder
from timm_anytime.train.config import config_from_args

gpu = load_script("examples/reproduce_cifar_gpu.py")


def test_pack_unpack_keeps_every_image_and_the_order(tmp_path: Path) -> None:
    source = toy_cifar(tmp_path / "cifar", per_class=5)
    packed = gpu.pack(source, test_per_class=3, output=tmp_path / "pack.safetensors.xz")
    tree = gpu.unpack(packed, tmp_path / "unpacked")
    for split, per_class in (("train", None), ("test", 3)):
        original = load_image_folder(source / split, max_per_class=per_class, progress=False)
        restored = load_image_folder(tree / split, progress=False)
        assert restored.classes == original.classes
        assert (restored.labels == original.labels).all()
        assert (restored.images == original.images).all()  # the same JPEG bytes decode the same
    with pytest.raises(SystemExit, match=r"no CIFAR-10 pack at .*: run `python examples/reproduce_cifar_gpu\.py pack`"):
        gpu.unpack(tmp_path / "missing.safetensors.xz", tmp_path / "elsewhere")
    truncated = tmp_path / "truncated.safetensors.xz"
    truncated.write_bytes(packed.read_bytes()[:1000])
    with pytest.raises(SystemExit, match="is not an xz-compressed pack"):
        gpu.unpack(truncated, tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()


def test_every_planned_run_is_a_valid_command(tmp_path: Path) -> None:
    names = list(gpu.plan())
    assert names[:6] == ["w_sgd_s0", "w_osgd_s0", "w_sgd_sum_s0", "d_sgd_s0", "d_osgd_s0", "d_sgd_sum_s0"]
    lines = gpu.commands(tmp_path / "runs", tmp_path / "data", names, epochs=30, train_per_class=None)
    assert len(lines) == len(names)
    for name, line in zip(names, lines, strict=True):
        flags = line.split(" -m timm_anytime.cli.train ", 1)[1].split()
        cfg = config_from_args(flags)
        assert timm.is_model(cfg.model), name
        assert (cfg.epochs, cfg.train_per_class, cfg.precision, cfg.channels_last) == (30, None, "bf16", True)
        assert cfg.name == gpu.label(name)
        # a 5-epoch warmup from a tenth of the rate, for every run (sgd_sum's lr and warmup both x3)
        assert cfg.warmup_epochs == 5, name
        assert abs(cfg.warmup_lr - cfg.lr / 10) < 1e-12, name
    assert gpu.label("w_sgd_sum_s2") == "sgd_sum"
    assert gpu.label("d98_osgd_s0") == "osgd"


def test_a_started_run_resumes_and_a_finished_one_is_skipped(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    (runs / "w_sgd_s0").mkdir(parents=True)
    (runs / "w_sgd_s0" / "config.yaml").write_text("model: x\n")
    (runs / "w_osgd_s0").mkdir()
    (runs / "w_osgd_s0" / "model.safetensors").write_bytes(b"")
    lines = gpu.commands(runs, tmp_path, ["w_sgd_s0", "w_osgd_s0", "d_sgd_s0"], 30, None)
    assert len(lines) == 2
    assert "--resume" in lines[0]
    assert "w_sgd_s0" in lines[0]
    assert "--resume" not in lines[1]
    assert "d_sgd_s0" in lines[1]


def test_bundles_stay_under_the_device_limit_and_keep_runs_whole(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(gpu, "TAR_LIMIT", 3000)
    runs = tmp_path / "runs"
    for name, size in (("a", 1000), ("b", 1500), ("c", 2500)):
        (runs / name / "checkpoint").mkdir(parents=True)
        (runs / name / "checkpoint" / "model.safetensors").write_bytes(b"x" * size)
    tars = gpu.bundle(runs, ["a", "b", "c", "missing"], tmp_path / "out")
    members = []
    for path in tars:
        with tarfile.open(path) as tar:
            members.append(sorted({m.split("/")[0] for m in tar.getnames()}))
    assert members == [["a", "b"], ["c"]]


def test_collect_keeps_unfinished_runs_for_the_next_call(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(gpu, "CAMPAIGN", tmp_path / "campaign")
    machine, out = tmp_path / "machine", tmp_path / "out"
    for name, files in (("w_sgd_s0", ["config.yaml", "metrics.jsonl", "model.safetensors"]), ("d_sgd_s0", [])):
        (machine / name / "checkpoint").mkdir(parents=True)
        (machine / name / "checkpoint" / "state.json").write_text("{}")
        for item in files:
            (machine / name / item).write_text(item)
    gpu.bundle(machine, ["w_sgd_s0", "d_sgd_s0"], out)
    runs = {"w_sgd_s0": "finished", "d_sgd_s0": "started"}
    (out / "campaign.json").write_text(json.dumps({"commit": "abc", "runs": runs}))
    gpu.main(
        [
            "collect",
            str(out),
            "--runs-dir",
            str(tmp_path / "here"),
            "--results",
            str(tmp_path / "res"),
            "--data-dir",
            "",
        ]
    )
    assert sorted(p.name for p in (tmp_path / "res" / "w_sgd_s0").iterdir()) == [
        "campaign.json",
        "config.yaml",
        "metrics.jsonl",
    ]
    assert (tmp_path / "here" / "w_sgd_s0" / "model.safetensors").exists()  # the weights stay out of results/
    assert (tmp_path / "campaign" / "d_sgd_s0" / "checkpoint" / "state.json").exists()
    assert not (tmp_path / "campaign" / "w_sgd_s0").exists()
    assert not (tmp_path / "res" / "d_sgd_s0").exists()


def test_unfinished_runs_are_kept_where_a_commit_takes_them_to_the_next_session(tmp_path: Path, monkeypatch) -> None:
    """A later session may start on a fresh machine with only the repository: the campaign folder
    must not be git-ignored (it was .device_data/campaign). A run the budget stopped between a
    save's two renames (checkpoint.old and a half-written checkpoint.partial, no checkpoint/) is kept
    with its previous checkpoint back in place and neither leftover."""
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(gpu.CAMPAIGN / "w_sgd_s0" / "config.yaml")], cwd=gpu.REPO
    )
    assert ignored.returncode == 1  # 1: not ignored (0 would be ignored)
    monkeypatch.setattr(gpu, "CAMPAIGN", tmp_path / "campaign")
    machine, out = tmp_path / "machine", tmp_path / "out"
    for folder, content in (("checkpoint.old", "epoch 3"), ("checkpoint.partial", "epoch 4, half")):
        (machine / "w_sgd_s0" / folder).mkdir(parents=True)
        (machine / "w_sgd_s0" / folder / "state.json").write_text(content)
    (machine / "w_sgd_s0" / "config.yaml").write_text("epochs: 30")
    gpu.bundle(machine, ["w_sgd_s0"], out)
    (out / "campaign.json").write_text(json.dumps({"commit": "abc", "runs": {"w_sgd_s0": "started"}}))
    gpu.main(["collect", str(out), "--runs-dir", str(tmp_path / "here"), "--results", str(tmp_path / "res")])
    kept = tmp_path / "campaign" / "w_sgd_s0"
    assert sorted(p.name for p in kept.iterdir()) == ["checkpoint", "config.yaml"]
    assert (kept / "checkpoint" / "state.json").read_text() == "epoch 3"
    assert (tmp_path / "campaign" / "README.md").is_file()  # says what the committed folder is


def test_a_collect_cut_off_halfway_keeps_the_earlier_copies(tmp_path: Path, monkeypatch) -> None:
    """Collecting again and failing midway (a kill, a full disk) leaves the earlier copies of an
    unfinished run and of a finished run's results whole: each is filled aside and renamed."""
    monkeypatch.setattr(gpu, "CAMPAIGN", tmp_path / "campaign")
    machine, out = tmp_path / "machine", tmp_path / "out"
    for name in ("w_sgd_s0", "d_sgd_s0"):
        (machine / name / "checkpoint").mkdir(parents=True)
        for item in ("config.yaml", "metrics.jsonl", "checkpoint/state.json"):
            (machine / name / item).write_text(f"{name} {item}")
    gpu.bundle(machine, ["w_sgd_s0", "d_sgd_s0"], out)
    runs = {"d_sgd_s0": "started", "w_sgd_s0": "finished"}  # collected in this order
    (out / "campaign.json").write_text(json.dumps({"commit": "abc", "runs": runs}))
    args = ["collect", str(out), "--runs-dir", str(tmp_path / "here"), "--results", str(tmp_path / "res")]
    args += ["--data-dir", ""]
    gpu.main(args)
    copies = {"campaign": tmp_path / "campaign" / "d_sgd_s0", "results": tmp_path / "res" / "w_sgd_s0"}

    def contents() -> dict[str, dict[str, str]]:
        return {
            key: {str(f.relative_to(d)): f.read_text() for f in d.rglob("*") if f.is_file()}
            for key, d in copies.items()
        }

    before = contents()
    assert before["campaign"]["checkpoint/state.json"] == "d_sgd_s0 checkpoint/state.json"
    assert before["results"]["metrics.jsonl"] == "w_sgd_s0 metrics.jsonl"

    real_copy, real_copytree = shutil.copy2, shutil.copytree
    # copies 1-3 are the unfinished run's (config, metrics, checkpoint state), 4-5 the results'
    for fail_at in (2, 3, 4, 5):
        copied: list[str] = []

        def copy_or_fail(source, target, *a, copied=copied, fail_at=fail_at, **k):
            if len(copied) == fail_at - 1:
                raise OSError("No space left on device")
            copied.append(source)
            return real_copy(source, target, *a, **k)

        def copytree(source, target, symlinks=False, ignore=None, copy_function=None, *rest, **k):
            return real_copytree(source, target, symlinks, ignore, copy_or_fail, *rest, **k)

        monkeypatch.setattr(shutil, "copy2", copy_or_fail)
        monkeypatch.setattr(shutil, "copytree", copytree)
        with pytest.raises(OSError, match="No space left"):
            gpu.main(args)
        monkeypatch.setattr(shutil, "copy2", real_copy)
        monkeypatch.setattr(shutil, "copytree", real_copytree)
        assert contents() == before, fail_at
        assert len(copied) == fail_at - 1, fail_at  # the failure came where it was meant to


def test_a_finished_run_whose_evaluation_fails_keeps_its_copy_to_resume(tmp_path: Path, monkeypatch) -> None:
    """The committed copy of a run is what a fresh machine resumes from: collecting the run as
    finished deletes that copy only after its results are stored, not before its evaluation."""
    monkeypatch.setattr(gpu, "CAMPAIGN", tmp_path / "campaign")
    machine, out = tmp_path / "machine", tmp_path / "out"
    (machine / "w_sgd_s0" / "checkpoint").mkdir(parents=True)
    for item in ("config.yaml", "metrics.jsonl", "checkpoint/state.json"):
        (machine / "w_sgd_s0" / item).write_text(item)
    gpu.bundle(machine, ["w_sgd_s0"], out)
    args = ["collect", str(out), "--runs-dir", str(tmp_path / "here"), "--results", str(tmp_path / "res")]
    (out / "campaign.json").write_text(json.dumps({"commit": "abc", "runs": {"w_sgd_s0": "started"}}))
    gpu.main([*args, "--data-dir", ""])
    kept = tmp_path / "campaign" / "w_sgd_s0" / "checkpoint" / "state.json"
    assert kept.is_file()

    real_run = subprocess.run

    def evaluation_fails(command, **kwargs):
        if "timm_anytime.cli.evaluate" in command:
            raise subprocess.CalledProcessError(1, command)
        return real_run(command, **kwargs)  # git

    (out / "campaign.json").write_text(json.dumps({"commit": "abc", "runs": {"w_sgd_s0": "finished"}}))
    monkeypatch.setattr(gpu.subprocess, "run", evaluation_fails)
    with pytest.raises(subprocess.CalledProcessError):
        gpu.main([*args, "--data-dir", str(tmp_path / "cifar10")])
    assert kept.is_file()
    assert not (tmp_path / "res" / "w_sgd_s0").exists()
    monkeypatch.setattr(gpu.subprocess, "run", real_run)
    gpu.main([*args, "--data-dir", ""])  # collected again without the evaluation: stored, then dropped
    assert (tmp_path / "res" / "w_sgd_s0" / "metrics.jsonl").is_file()
    assert not kept.parent.parent.exists()


def test_a_stopped_run_resumes_on_a_fresh_machine(tmp_path: Path, monkeypatch) -> None:
    """A run stopped after epoch 1 of 2 (made by training one epoch and restoring what the budget
    stop leaves: a checkpoint and no final weights), carried in the campaign folder, is resumed on
    the next call's fresh machine, finished, bundled and evaluated by collect."""
    monkeypatch.setattr(gpu, "CAMPAIGN", tmp_path / "campaign")
    packed = gpu.pack(toy_cifar(tmp_path / "cifar", 4), 2, tmp_path / "pack.safetensors.xz")

    def device_call(index: int, epochs: int) -> tuple[Path, Path]:
        out, machine = tmp_path / f"out{index}", tmp_path / f"machine{index}"  # a fresh machine each call
        args = ["run", "--pack", str(packed), "--unpack-to", str(tmp_path / f"tree{index}"), "--only", "w_sgd_s0"]
        args += [
            "--jobs",
            "1",
            "--epochs",
            str(epochs),
            "--batch-size",
            "16",
            "--budget-s",
            "600",
            "--bundle-s",
            "0",
            "--margin-s",
            "0",
        ]
        gpu.main([*args, "--out", str(out), "--runs-dir", str(machine)])
        return out, machine / "w_sgd_s0"

    _, run = device_call(0, epochs=1)
    (run / "model.safetensors").unlink()
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("epochs: 1\n", "epochs: 2\n"))
    shutil.copytree(run, tmp_path / "campaign" / "w_sgd_s0")

    out, run = device_call(1, epochs=2)
    assert json.loads((out / "campaign.json").read_text())["runs"] == {"w_sgd_s0": "finished"}
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines if "train_loss" in m] == [1, 2]  # resumed, not restarted
    here = ["--runs-dir", str(tmp_path / "here"), "--results", str(tmp_path / "res")]
    gpu.main(["collect", str(out), *here, "--data-dir", str(tmp_path / "cifar")])
    assert json.loads((tmp_path / "res" / "w_sgd_s0" / "eval.json").read_text())["stages"]
    assert not (tmp_path / "campaign" / "w_sgd_s0").exists()


def test_collect_warns_when_the_next_call_could_not_carry_the_campaign(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(gpu, "DEVICE_DATA", tmp_path / "data")
    monkeypatch.setattr(gpu, "CAMPAIGN", tmp_path / "data" / "campaign")
    (tmp_path / "data" / "campaign" / "w_osgd_s0").mkdir(parents=True)
    (tmp_path / "data" / "campaign" / "w_osgd_s0" / "state.safetensors").write_bytes(b"x" * 2**20)
    monkeypatch.setattr(gpu, "CARRY_LIMIT", 100 * 2**20)
    gpu.warn_if_too_big_to_carry()
    assert capsys.readouterr().err == ""
    listed = gpu._git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    repository = sum((gpu.REPO / f).stat().st_size for f in listed if f)
    monkeypatch.setattr(gpu, "CARRY_LIMIT", repository + 2**19)
    (tmp_path / "data" / "campaign" / "README.md").write_text("what this folder is")
    (tmp_path / "data" / "campaign" / ".d_osgd_s0.partial").mkdir()  # a collect cut off
    gpu.warn_if_too_big_to_carry()
    err = capsys.readouterr().err
    assert err.endswith("start again from scratch): w_osgd_s0 (1.0 MiB)\n")  # the runs only
    # counted in 4 KiB blocks as du does (no tracked files here): 1 MiB fits 3 MiB; 600 more one-byte
    # files are 2.3 MiB on disk, not 600 bytes, and no longer fit
    monkeypatch.setattr(gpu, "_git", lambda *args: "")
    monkeypatch.setattr(gpu, "CARRY_LIMIT", 3 * 2**20)
    gpu.warn_if_too_big_to_carry()
    assert capsys.readouterr().err == ""
    for index in range(600):
        (tmp_path / "data" / "campaign" / "w_osgd_s0" / f"{index}.json").write_bytes(b"x")
    gpu.warn_if_too_big_to_carry()
    assert "warning" in capsys.readouterr().err


@pytest.mark.slow
def test_the_gpu_session_runs_end_to_end_on_cpu(tmp_path: Path, monkeypatch) -> None:
    """examples/gpu_session.sh at toy size on the CPU, from a copy of the tracked files without .git
    and with a python that cannot see this project's install (as on the device): every measurement command of
    benchmarks/gpu_check.sh it runs is valid (they would otherwise fail on the GPU, where a call
    costs minutes of a rare device), the campaign runs in the rest of the budget, at most 8 files
    come back, and collect puts the measurements under results and the run under runs.

    It also guards a bug that cost a GPU session: both scripts once probed `python -c "import
    timm_anytime"`, which passes in the repository root without an install (timm_anytime/ imports
    as a namespace package), so every measurement and the campaign died on ModuleNotFoundError."""
    packed = gpu.pack(toy_cifar(tmp_path / "cifar", 4), 2, tmp_path / "pack.safetensors.xz")
    out = tmp_path / "out"
    env = {
        **os.environ,
        **python_without_this_project(tmp_path),
        "OUT": str(out),
        "BUDGET_S": "500",
        # every item but the compiled step (a C++ build on the CPU); the tiny settings of a smoke test
        "ITEMS": "train_step_bf16 concurrent_runs floor_batched_bf16",
        "DEVICE": "cpu",
        "PRECISION": "no",
        "BATCH": "4",
        "ROUNDS": "1",
        "WINDOW_S": "0.5",
        "COUNTS": "1 2",
        "OMP_NUM_THREADS": "1",
    }
    args = ["--pack", str(packed), "--unpack-to", str(tmp_path / "tree"), "--runs-dir", str(tmp_path / "machine")]
    args += ["--only", "w_sgd_s0", "--jobs", "1", "--epochs", "1", "--batch-size", "16", "--margin-s", "0"]
    result = subprocess.run(
        ["bash", str(device_copy(tmp_path / "device_copy") / "examples" / "gpu_session.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "gpu_check: exit 0" in result.stdout, result.stdout[-3000:]
    assert "ModuleNotFoundError" not in result.stdout + result.stderr
    returned = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert returned == ["campaign.json", "gpu_check.tar", "logs.tar", "runs0.tar"]
    monkeypatch.setattr(gpu, "CAMPAIGN", tmp_path / "campaign")
    here = ["--runs-dir", str(tmp_path / "here"), "--results", str(tmp_path / "res"), "--data-dir", ""]
    gpu.main(["collect", str(out), *here, "--measurements", str(tmp_path / "measured")])
    (measured,) = (tmp_path / "measured").iterdir()
    files = {p.name: p.read_text() for p in (measured / "gpu_check").iterdir()}
    assert {"train_step_bf16.txt", "concurrent_runs.txt", "floor_batched_bf16.txt"} <= set(files)
    assert "failed.txt" not in files
    assert "img/s" in files["train_step_bf16.txt"]
    assert "peak MiB" in files["train_step_bf16.txt"]
    counts = [line.split()[0] for line in files["concurrent_runs.txt"].splitlines() if line.strip()[:1].isdigit()]
    assert counts == ["1", "2"]
    assert (tmp_path / "here" / "w_sgd_s0" / "model.safetensors").exists()


def device_copy(dest: Path) -> Path:
    """The repository as a device call receives it: the tracked files as they are here, no .git."""
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=gpu.REPO, capture_output=True, check=True).stdout
    for name in filter(None, listing.decode().split("\0")):
        source = gpu.REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def python_without_this_project(tmp_path: Path) -> dict[str, str]:
    """Environment for a ``PYTHON`` that sees torch, timm and the rest but not this project's
    install, as on the lent GPU machine: ``-S`` skips site-packages' .pth files (the editable
    installs), PYTHONPATH gives the packages back."""
    wrapper = tmp_path / "python_without_this_project"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    wrapper.chmod(0o755)
    packages = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    return {"PYTHON": str(wrapper), "PYTHONPATH": os.pathsep.join(sorted(packages))}


def test_a_failed_measurement_fails_gpu_check_but_the_rest_still_run(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), "PRECISION": "no-such-precision"}
    env |= {"ITEMS": "train_step_bf16 floor_batched_bf16", "DEVICE": "cpu", "ROUNDS": "1", "BATCH": "2"}
    result = subprocess.run(
        ["bash", str(gpu.REPO / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1
    assert (tmp_path / "failed.txt").read_text().split() == ["failed:", "train_step_bf16", "floor_batched_bf16"]


def test_gpu_check_refuses_an_unknown_item_before_measuring_anything(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), "ITEMS": "train_step_bf16 concurent_runs"}
    result = subprocess.run(
        ["bash", str(gpu.REPO / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "unknown item 'concurent_runs'" in result.stderr
    assert "concurrent_runs" in result.stderr  # names the choices
    assert not (tmp_path / "train_step_bf16.txt").exists()
