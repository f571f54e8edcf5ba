"""A run folder's files survive a writer killed halfway (timm_anytime.run_files)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from timm_anytime.run_files import (
    append_record,
    atomic_copy,
    atomic_write_text,
    read_records,
    remove_folder,
    replace_folder,
)
from timm_anytime.train.environment import run_starts


def test_an_append_after_a_cut_line_drops_the_fragment_and_starts_its_own_line(tmp_path: Path) -> None:
    log = tmp_path / "environment.jsonl"
    log.write_text('{"start": 1}\n{"start": 2, "cpu": "AM')  # the second start was killed mid-write
    assert [record for _, record in read_records(log)] == [{"start": 1}]
    append_record(log, {"start": 3})
    assert log.read_text() == '{"start": 1}\n{"start": 3}\n'


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"epoch": 1}\n{"epoch": 2}')
    assert [record for _, record in read_records(log)] == [{"epoch": 1}, {"epoch": 2}]
    append_record(log, {"epoch": 3})
    assert log.read_text() == '{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n'


def test_appends_create_the_file_and_a_single_fragment_leaves_an_empty_log(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    append_record(log, {"epoch": 1})
    assert log.read_text() == '{"epoch": 1}\n'
    log.write_text('{"epo')
    assert read_records(log) == []
    append_record(log, {"epoch": 1, "lr": 0.1})
    assert log.read_text() == '{"epoch": 1, "lr": 0.1}\n'


def test_run_starts_reads_past_a_cut_start_and_names_a_damaged_one(tmp_path: Path) -> None:
    (tmp_path / "environment.jsonl").write_text('{"git_commit": "a"}\n\n{"git_commit": "b", "py')
    assert run_starts(tmp_path) == [{"git_commit": "a"}]
    (tmp_path / "environment.jsonl").write_text('{"git_commit": "a"}\n{"git_co\n{"git_commit": "b"}\n')
    with pytest.raises(ValueError, match=r"environment\.jsonl, line 2, is not a JSON record .*delete that line"):
        run_starts(tmp_path)


def _cut_halfway(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every text write and file copy stop halfway, as a kill would."""

    def half_text(self: Path, text: str, *args, **kwargs) -> int:
        with self.open("w") as handle:
            handle.write(text[: len(text) // 2])
        raise KeyboardInterrupt

    def half_copy(source, target, *args, **kwargs) -> None:
        data = Path(source).read_bytes()
        Path(target).write_bytes(data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", half_text)
    monkeypatch.setattr(shutil, "copyfile", half_copy)


def test_whole_file_writes_cut_off_leave_the_earlier_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text, copy, source = tmp_path / "config.yaml", tmp_path / "model.safetensors", tmp_path / "source"
    atomic_write_text(text, "epochs: 10\nlr: 0.1\n")
    source.write_bytes(b"new weights" * 100)
    copy.write_bytes(b"old weights")
    _cut_halfway(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(text, "epochs: 20\nlr: 0.2\n")
    with pytest.raises(KeyboardInterrupt):
        atomic_copy(source, copy)
    monkeypatch.undo()
    assert text.read_text() == "epochs: 10\nlr: 0.1\n"
    assert copy.read_bytes() == b"old weights"
    atomic_copy(source, copy)  # uncut, each replaces the file (and the fragment beside it)
    atomic_write_text(text, "epochs: 20\n")
    assert (copy.read_bytes(), text.read_text()) == (b"new weights" * 100, "epochs: 20\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "model.safetensors", "source"]


def test_a_config_rewritten_on_resume_and_cut_off_still_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.timm_anytime.runs import tiny_config
    from timm_anytime.train import TrainConfig

    config = tiny_config(tmp_path / "run", epochs=7)
    config.save(tmp_path / "config.yaml")
    _cut_halfway(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        tiny_config(tmp_path / "run", epochs=7, eval_every=2).save(tmp_path / "config.yaml")
    monkeypatch.undo()
    assert TrainConfig.load(tmp_path / "config.yaml") == config


def _folder(path: Path) -> dict[str, str] | None:
    return {str(f.relative_to(path)): f.read_text() for f in path.rglob("*") if f.is_file()} if path.exists() else None


def _fill_with(files: dict[str, str]):
    def fill(staging: Path) -> int:
        for name, text in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_text(text)
        return len(files)

    return fill


def test_a_folder_replacement_killed_at_any_step_never_shows_half_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed at each rename and each delete in turn (a delete killed halfway: one file gone), the
    name holds the earlier folder or the new one, or nothing with the earlier one set aside, which
    the next call puts back even when that call's own fill fails."""
    earlier = {"eval.json": "old", "checkpoint/model.safetensors": "old weights", "metrics.jsonl": "1\n"}
    new = {"eval.json": "new", "checkpoint/model.safetensors": "new weights"}
    real_rename, real_rmtree = Path.rename, shutil.rmtree
    kills = 0
    for kill_at in range(20):
        target = tmp_path / f"try{kill_at}" / "run"
        replace_folder(target, _fill_with(earlier))
        calls = 0

        def killed(real, *args, kill_at=kill_at, **kwargs):
            nonlocal calls
            calls += 1
            if calls == kill_at + 1:
                files = [f for f in Path(args[0]).rglob("*") if f.is_file()] if real is real_rmtree else []
                if files:
                    files[0].unlink()  # a delete cut off after its first file
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(Path, "rename", lambda *a, **k: killed(real_rename, *a, **k))
        monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: killed(real_rmtree, *a, **k))
        try:
            replace_folder(target, _fill_with(new))
        except KeyboardInterrupt:
            kills += 1
        else:
            monkeypatch.undo()
            break
        finally:
            monkeypatch.undo()
        seen = _folder(target)
        assert seen in (earlier, new) or (seen is None and _folder(target.with_name(".run.old")) == earlier), kill_at

        def full_disk(staging: Path) -> None:
            raise OSError("No space left on device")

        with pytest.raises(OSError, match="No space"):
            replace_folder(target, full_disk)
        assert _folder(target) == (new if seen == new else earlier), kill_at
        assert replace_folder(target, _fill_with(new)) == 2
        assert _folder(target) == new, kill_at
        assert [p.name for p in target.parent.iterdir()] == ["run"], kill_at
    assert kills == 5  # each of a replacement's three deletes and two renames was cut once


def test_a_fill_that_fails_or_makes_no_folder_leaves_the_earlier_folder(tmp_path: Path) -> None:
    target = tmp_path / "results" / "w_osgd_s0"  # the parent is created
    replace_folder(target, _fill_with({"eval.json": "old"}))

    def half(staging: Path) -> None:
        staging.mkdir()
        (staging / "eval.json").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replace_folder(target, half)
    with pytest.raises(RuntimeError, match="must create and fill"):
        replace_folder(target, lambda staging: None)
    assert _folder(target) == {"eval.json": "old"}
    assert [p.name for p in target.parent.iterdir()] == ["w_osgd_s0"]  # no staging left behind


def test_a_folder_removal_killed_halfway_leaves_nothing_under_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run folder that a later step would resume from (a GPU campaign's copy of a finished run):
    its delete cut off after one file must not leave the rest of it under the run's name."""
    target = tmp_path / "campaign" / "w_sgd_s0"
    replace_folder(target, _fill_with({"config.yaml": "epochs: 30", "checkpoint/state.json": "{}"}))
    real_rmtree = shutil.rmtree

    def cut_off(path, *args, **kwargs):
        files = [f for f in Path(path).rglob("*") if f.is_file()]
        if files:
            files[0].unlink()
            raise KeyboardInterrupt
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", cut_off)
    with pytest.raises(KeyboardInterrupt):
        remove_folder(target)
    monkeypatch.undo()
    assert not target.exists()
    remove_folder(target)  # the next call clears what the kill left, and a missing folder is no error
    assert list(target.parent.iterdir()) == []
