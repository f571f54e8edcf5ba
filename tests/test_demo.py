"""The README's main job (``make demo`` = ``examples/anytime_compare.py`` on the bundled digits)
runs end to end, at one epoch and one seed instead of its default schedule and two seeds: train
sgd, osgd and the Oracles, evaluate them as anytime predictors, write the report and its plots.
The parts are tested on their own elsewhere; this is the front door, tested as a user walks
through it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.scripts import ROOT


def test_the_demo_runs_end_to_end(tmp_path: Path) -> None:
    command = [
        sys.executable,
        str(ROOT / "examples" / "anytime_compare.py"),
        "--epochs",
        "1",
        "--seeds",
        "0",
        "--output",
        str(tmp_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "report" / "report.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in report.splitlines() if line.startswith("| ")}
    assert {"sgd", "osgd", "oracle_w0.25", "oracle_w0.5", "oracle_w1"} <= set(rows)
    for name in ("sgd", "osgd"):
        errors = [float(x) for x in re.findall(r"\|\s*(\d+\.\d+)\s*(?=\|)", rows[name])[:3]]
        assert len(errors) == 3, rows[name]
        assert all(0.0 <= e <= 100.0 for e in errors), rows[name]
    for plot in ("stage_error.png", "error_vs_flops.png", "deadlines.png"):
        assert (tmp_path / "report" / plot).stat().st_size > 1000, plot
    assert (tmp_path / "osgd_s0" / "eval.json").is_file()
