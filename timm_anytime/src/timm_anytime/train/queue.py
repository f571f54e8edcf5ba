"""Pack independent runs onto one machine: a queue that keeps K commands in flight.

A CIFAR-sized network leaves most of a large GPU idle, so several runs side by side finish a
campaign sooner than one after another (``benchmarks/concurrent_runs.py`` measures by how much).
``anytime-queue`` takes one shell command per line, starts the first K, and starts the next one
whenever one finishes. Each command's output goes to its own log; a JSON summary records every
command's start, end and exit status. With ``--budget-s``, no command starts after the budget
minus ``--margin-s``, and those still running when the budget ends get SIGINT and then SIGTERM:
``anytime-train`` runs checkpoint every epoch, so ``--resume`` continues them later.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from tqdm import tqdm


@dataclass
class Job:
    """One command of the queue and what became of it."""

    index: int
    command: str
    log: str
    started: float | None = None
    ended: float | None = None
    returncode: int | None = None
    status: str = "waiting"  # waiting, running, done, failed, stopped (budget), skipped (budget)


def read_commands(path: str | os.PathLike) -> list[str]:
    """Non-empty lines of ``path`` that are not ``#`` comments."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"command file {path} does not exist: write one shell command per line")
    lines = [line.strip() for line in path.read_text().splitlines()]
    commands = [line for line in lines if line and not line.startswith("#")]
    if not commands:
        raise ValueError(f"command file {path} holds no command (one shell command per line, # for comments)")
    return commands


def run_queue(
    commands: Sequence[str],
    *,
    jobs: int,
    logs: str | os.PathLike,
    budget_s: float | None = None,
    margin_s: float = 0.0,
    poll_s: float = 0.5,
    grace_s: float = 20.0,
    progress: bool = True,
    env: dict[str, str] | None = None,
) -> list[Job]:
    """Run ``commands`` through a shell, at most ``jobs`` at a time; returns every job's record.

    ``logs`` receives ``<index>.log`` per command and ``queue.json`` (rewritten as jobs change).
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    if budget_s is not None and budget_s <= margin_s:
        raise ValueError(f"budget_s ({budget_s}) must exceed margin_s ({margin_s})")
    logs = Path(logs)
    logs.mkdir(parents=True, exist_ok=True)
    queue = [Job(i, command, str(logs / f"{i:03d}.log")) for i, command in enumerate(commands)]
    start = time.monotonic()
    deadline = None if budget_s is None else start + budget_s
    running: dict[int, tuple[subprocess.Popen, IO[str]]] = {}
    pending = list(queue)
    bar = tqdm(total=len(queue), desc=f"queue ({jobs} in flight)", unit="run", disable=not progress)

    def save() -> None:
        (logs / "queue.json").write_text(json.dumps([asdict(job) for job in queue], indent=1) + "\n")

    def finish(job: Job, process: subprocess.Popen, handle: IO[str], status: str | None = None) -> None:
        job.returncode = process.returncode
        job.ended = round(time.monotonic() - start, 3)
        job.status = status or ("done" if process.returncode == 0 else "failed")
        handle.close()
        bar.update()

    try:
        while pending or running:
            now = time.monotonic()
            may_start = deadline is None or now < deadline - margin_s
            while pending and len(running) < jobs and may_start:
                job = pending.pop(0)
                log: IO[str] = open(job.log, "w")  # noqa: SIM115 (closed when the job ends)
                process = subprocess.Popen(
                    job.command,
                    shell=True,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **(env or {})},
                    start_new_session=True,  # its own process group: a budget stop reaches its children
                )
                job.started, job.status = round(now - start, 3), "running"
                running[job.index] = (process, log)
                save()
            if not may_start and pending:
                for job in pending:
                    job.status = "skipped"
                    bar.update()
                pending.clear()
                save()
            for index, (process, handle) in list(running.items()):
                if process.poll() is not None:
                    finish(queue[index], process, handle)
                    del running[index]
                    save()
            if deadline is not None and time.monotonic() >= deadline and running:
                _stop(running.values(), grace_s)
                for index, (process, handle) in running.items():
                    finish(queue[index], process, handle, status="stopped")
                running.clear()
                save()
            if running or pending:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        _stop(running.values(), grace_s)
        for index, (process, handle) in running.items():
            finish(queue[index], process, handle, status="stopped")
        save()
        raise
    finally:
        bar.close()
    save()
    return queue


def _stop(processes, grace_s: float) -> None:
    """SIGINT each process group, then SIGTERM and SIGKILL whatever is still alive."""
    processes = [p for p, _ in processes]
    for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        alive = [p for p in processes if p.poll() is None]
        if not alive:
            return
        for process in alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
        end = time.monotonic() + wait
        while time.monotonic() < end and any(p.poll() is None for p in alive):
            time.sleep(0.1)
