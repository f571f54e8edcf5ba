"""anytime-queue: K commands in flight, logs, failures, and the time budget."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from timm_anytime.cli.queue import main
from timm_anytime.train.queue import read_commands, run_queue

PY = shlex.quote(sys.executable)


def stamp(folder: Path, name: str, seconds: float) -> str:
    """A command that records when it started and ended (monotonic clock), sleeping in between."""
    code = (
        "import time, pathlib, sys; s = time.monotonic(); time.sleep(float(sys.argv[2])); "
        "pathlib.Path(sys.argv[1]).write_text(f'{s} {time.monotonic()}'); print('ok')"
    )
    return f"{PY} -c {shlex.quote(code)} {folder / name} {seconds}"


def test_keeps_k_commands_in_flight_and_logs_each(tmp_path: Path) -> None:
    commands = [stamp(tmp_path, f"job{i}", 0.6) for i in range(5)]
    queue = run_queue(commands, jobs=2, logs=tmp_path / "logs", poll_s=0.05, progress=False)
    assert [job.status for job in queue] == ["done"] * 5
    spans = [tuple(map(float, (tmp_path / f"job{i}").read_text().split())) for i in range(5)]
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running, most = 0, 0
    for _, change in events:
        running += change
        most = max(most, running)
    assert most == 2  # never more than K, and K were really in flight together
    assert all((tmp_path / "logs" / f"{i:03d}.log").read_text().strip() == "ok" for i in range(5))
    recorded = json.loads((tmp_path / "logs" / "queue.json").read_text())
    assert [entry["returncode"] for entry in recorded] == [0] * 5


def test_budget_stops_running_commands_and_skips_the_rest(tmp_path: Path) -> None:
    commands = [stamp(tmp_path, "quick", 0.8), stamp(tmp_path, "slow", 60), stamp(tmp_path, "later", 0.1)]
    queue = run_queue(commands, jobs=2, logs=tmp_path, budget_s=2.5, margin_s=2.0, poll_s=0.05, grace_s=2)
    assert [job.status for job in queue] == ["done", "stopped", "skipped"]
    assert queue[1].ended is not None
    assert queue[1].ended < 10
    assert not (tmp_path / "later").exists()


def test_cli_reports_failures_and_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "commands.txt"
    file.write_text(f"# a comment\n{PY} -c 'import sys; sys.exit(3)'\n\n{stamp(tmp_path, 'fine', 0)}\n")
    assert len(read_commands(file)) == 2
    assert main([str(file), "--jobs", "2", "--logs", str(tmp_path / "logs"), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "[failed" in captured.out
    assert "[done" in captured.out
    assert "1 command(s) failed" in captured.err
    assert main([str(tmp_path / "missing.txt")]) == 2
    assert "command file" in capsys.readouterr().err
    (tmp_path / "empty.txt").write_text("# nothing\n")
    assert main([str(tmp_path / "empty.txt")]) == 2
