"""The run folder's JSON-lines logs survive a writer killed mid-line (timm_anytime.jsonl_log)."""

from __future__ import annotations

from pathlib import Path

import pytest

from timm_anytime.jsonl_log import append_record, read_records
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
