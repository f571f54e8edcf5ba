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


def test_osgd_multitask_example_reports_sample_sd_and_welch_tests(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The table's spread is the sample sd over seeds (not the population sd, which understates a
    3-seed spread by a factor 0.82), and every method gets a Welch test against SGD."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "osgd_multitask_digits", ROOT / "examples" / "osgd_multitask_digits.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    # seeds give digit accuracy 90 and 94: sample sd 2.83 (population sd 2.0); SGD 80 and 82
    fake = {0: 90.0, 1: 94.0}
    monkeypatch.setattr(example, "load_digits_tensors", lambda: None)
    monkeypatch.setattr(
        example,
        "train",
        lambda options, seed, epochs, data: {
            "digit": fake[seed] if options["method"] != "sum" else 80.0 + 2 * seed,
            "parity": 50.0 + seed,
            "reconstruction": 0.1,
            "cos(digit, recon)": 0.0,
        },
    )
    monkeypatch.setattr(example, "plot", lambda results, path: None)
    monkeypatch.setattr(sys, "argv", ["osgd_multitask_digits.py", "--seeds", "2", "--epochs", "1"])
    example.main()
    out = capsys.readouterr().out
    assert "n = 2 seeds, mean (sample sd)" in out
    osgd_row = next(line for line in out.splitlines() if line.startswith("osgd  "))
    assert "92.0 (2.8)" in osgd_row
    # Welch: 92 - 81 = +11, from the closed form with sds 2.83 and 1.41 (df 1.47)
    welch = out.split("minus sum (SGD)")[1]
    osgd_test = next(line for line in welch.splitlines() if line.startswith("osgd  "))
    assert osgd_test.split()[1] == "+11.0"
    assert "no spread: untestable" in osgd_test  # reconstruction: every seed gave 0.1
