"""``cpu_allocator``: glibc keeps freed memory in the process when tuned, and the environment's own
choice is left alone. The effect is checked in fresh processes against the untuned default, on
the process's resident memory (/proc/self/statm), not on the code's own report."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from timm_anytime import cpu_allocator
from timm_anytime.train import TrainConfig
from timm_anytime.train.config import config_from_args

GLIBC = platform.libc_ver()[0] == "glibc" and os.path.exists("/proc/self/statm")

# Allocates (with the C library's malloc, as PyTorch's CPU allocator does), touches and frees a
# 24 MiB block; prints how much resident memory the free gave back to the system.
FREE_24_MIB = """
import ctypes, os, sys
from timm_anytime.cpu_allocator import apply_cpu_allocator
print(apply_cpu_allocator(sys.argv[1]), file=sys.stderr)
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
statm = os.open("/proc/self/statm", os.O_RDONLY)
def resident():
    return int(os.pread(statm, 200, 0).split()[1]) * os.sysconf("SC_PAGE_SIZE")
size = 24 * 2**20
block = libc.malloc(size)
ctypes.memset(block, 1, size)  # every page touched
held = resident()
libc.free(block)
print((held - resident()) / 2**20)
"""


def _returned_mib(choice: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in cpu_allocator.GLIBC_VARIABLES}
    env.pop("GLIBC_TUNABLES", None)
    out = subprocess.run(
        [sys.executable, "-c", FREE_24_MIB, choice], capture_output=True, text=True, check=True, env=env
    ).stdout
    return float(out.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc on Linux only")
def test_tuned_keeps_a_freed_block_that_the_default_returns() -> None:
    assert _returned_mib("system") > 20  # glibc's default: a 24 MiB block is mmapped, unmapped on free
    assert _returned_mib("tuned") < 4  # tuned: it stays in the heap for the next allocation


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MALLOC_TRIM_THRESHOLD_", "131072"),
        ("MALLOC_MMAP_THRESHOLD_", "65536"),
        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0"),
        ("LD_PRELOAD", "/usr/lib/libjemalloc.so.2"),
    ],
)
def test_the_environments_choice_is_kept(name: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in (*cpu_allocator.GLIBC_VARIABLES, "GLIBC_TUNABLES", "LD_PRELOAD"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv(name, value)
    monkeypatch.setattr(cpu_allocator, "_applied", None)
    calls = []
    monkeypatch.setattr(cpu_allocator.ctypes, "CDLL", lambda *a: calls.append(a))
    setting = cpu_allocator.keep_freed_memory()
    assert setting.startswith("system (")
    assert name in setting
    assert calls == []  # mallopt never reached


def test_outside_glibc_nothing_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in (*cpu_allocator.GLIBC_VARIABLES, "GLIBC_TUNABLES", "LD_PRELOAD"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(cpu_allocator, "_applied", None)
    monkeypatch.setattr(cpu_allocator.platform, "libc_ver", lambda: ("", ""))
    assert cpu_allocator.keep_freed_memory() == "system (not glibc)"


def test_a_wrong_choice_names_the_choices() -> None:
    with pytest.raises(ValueError, match="tuned, system"):
        cpu_allocator.apply_cpu_allocator("jemalloc")
    with pytest.raises(ValueError, match="cpu_allocator must be one of tuned, system"):
        TrainConfig(model="anytime_cifar_resnet20_w124", dataset="digits", cpu_allocator="fast")


def test_anytime_train_flag_overrides_the_config_file_only_when_given(tmp_path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("model: anytime_cifar_resnet20_w124\ndataset: digits\ncpu_allocator: system\n")
    assert config_from_args(["--config", str(config)]).cpu_allocator == "system"
    assert config_from_args(["--config", str(config), "--cpu-allocator", "tuned"]).cpu_allocator == "tuned"
    assert config_from_args(["--model", "anytime_cifar_resnet20_w124", "--dataset", "digits"]).cpu_allocator == "tuned"
    with pytest.raises(SystemExit):  # argparse names the choices
        config_from_args(["--config", str(config), "--cpu-allocator", "jemalloc"])
