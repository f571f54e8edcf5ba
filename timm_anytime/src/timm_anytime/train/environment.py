"""A record of where and how a run was made: versions, command line, hardware, processes."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from ..run_files import read_records

PACKAGES = ("timm-anytime", "osgd", "torch", "torchvision", "timm", "accelerate", "safetensors", "numpy")

#: The run folder's log of starts: one :func:`environment_report` record (JSON) per line, appended
#: by ``anytime-train`` each time the run starts or resumes.
ENVIRONMENT_FILE = "environment.jsonl"


def run_starts(run: str | Path) -> list[dict[str, Any]]:
    """Every start recorded in the run folder's :data:`ENVIRONMENT_FILE`, oldest first ([] without
    one); a record cut off by a killed start is left out (:func:`~timm_anytime.run_files.read_records`)."""
    path = Path(run) / ENVIRONMENT_FILE
    if not path.is_file():
        return []
    return [record for _, record in read_records(path)]


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


#: Marks a recorded ``git_commit`` whose tree had uncommitted changes to tracked files.
DIRTY_SUFFIX = "-dirty"


def git_commit() -> str | None:
    """The commit of the git checkout this package runs from, with ``DIRTY_SUFFIX`` when tracked
    files have uncommitted changes; None outside a checkout (an installed wheel)."""
    source = Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() + (DIRTY_SUFFIX if dirty.stdout.strip() else "")


def describe_commit(commit: str | None) -> str:
    """A recorded ``git_commit`` as people read it: the short hash, "with uncommitted changes" where
    the tree was dirty, "not recorded" where the run was not in a git checkout."""
    if not commit or commit == "None":
        return "not recorded"
    if commit.endswith(DIRTY_SUFFIX):
        return f"{commit[:7]} with uncommitted changes"
    return commit[:7]


def is_clean_commit(commit: str | None) -> bool:
    """Whether a recorded ``git_commit`` names a committed revision (recorded, tree not dirty)."""
    return commit is not None and commit not in ("", "None") and not commit.endswith(DIRTY_SUFFIX)


def cpu_name() -> str:
    """The CPU model name (from /proc/cpuinfo where there is one), for run and benchmark records."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_report(
    num_processes: int = 1, device: str | None = None, mixed_precision: str = "no"
) -> dict[str, Any]:
    """What is needed to reproduce a run, as a JSON-ready dict."""
    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    return {
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "cwd": os.getcwd(),
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "packages": {name: _version(name) for name in PACKAGES},
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "gpus": gpus,
        "device": device,
        "num_processes": num_processes,
        "mixed_precision": mixed_precision,
    }
