"""Settings for every test session.

``make test`` runs the suite in several processes (pytest-xdist's ``-n``). Each would otherwise
start as many torch threads as the machine has cores, and N workers times all cores oversubscribe
them: OpenMP's spinning threads then slow small-tensor tests many times over. So each worker gets
its share of the cores, for its own torch ops and for the processes its tests start.
"""

from __future__ import annotations

import os

import pytest


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def pytest_configure(config: pytest.Config) -> None:
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")  # set in xdist's worker processes only
    if not workers:
        return
    import torch

    # an explicit OMP_NUM_THREADS wins; subprocesses that the tests start inherit it
    threads = int(os.environ.setdefault("OMP_NUM_THREADS", str(max(1, usable_cores() // int(workers)))))
    torch.set_num_threads(threads)
