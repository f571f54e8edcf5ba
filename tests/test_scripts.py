"""Every script under benchmarks/ and examples/ still imports what it uses and parses ``--help``.

Their real runs are too long for CI (examples/ has its own tests for the parts users rely on), so
without this a refactor that moves a name breaks a benchmark silently, as one did
(``OSGD_METHODS`` left ``train.config`` and ``benchmarks/train_step.py`` failed on import). The
scripts run in this process (``runpy``), so torch and timm are imported once, not per script.
"""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "examples").glob("*.py")])


def test_the_scripts_are_found() -> None:
    names = {p.name for p in SCRIPTS}
    assert {"train_step.py", "anytime_compare.py", "reproduce_cifar_cpu.py"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_script_help(script: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", [script.name, "--help"])
    monkeypatch.syspath_prepend(str(script.parent))  # as `python SCRIPT` puts the script's folder first
    with pytest.raises(SystemExit) as exit_info:  # argparse's --help exits with status 0
        runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code in (0, None)
    assert "usage:" in capsys.readouterr().out


def test_gpu_check_is_valid_bash() -> None:
    result = subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
