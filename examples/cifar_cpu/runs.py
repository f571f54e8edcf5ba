"""Run names and result folders of the CIFAR-10 CPU reproduction: the two designs, report labels,
and reading a finished run's per-stage errors back."""

from __future__ import annotations

import json
import re
from pathlib import Path

from timm_anytime.learning_curves import metric_records

WIDTH, DEPTH = "anytime_cifar_resnet20_w124", "anytime_cifar_sparse_resnet26_d124"
#: The CPU-sized members of the paper's width-depth designs (Table 1, bottom; Figures 7 and 6).
WIDTH_DEPTH_SIM, WIDTH_DEPTH_ALT = "anytime_cifar_sparse_resnet50_wd_sim", "anytime_cifar_sparse_resnet50_wd_alt"

#: Design tag (a run name's first field) -> the nested model its runs train.
DESIGNS = {"w": WIDTH, "d": DEPTH, "wdsim": WIDTH_DEPTH_SIM, "wdalt": WIDTH_DEPTH_ALT}


def is_sweep(name: str) -> bool:
    """A run of the underfit protocol's learning-rate sweep (validated, never tested)."""
    return name.startswith("sweep_")


def design_tag(name: str) -> str | None:
    """The design tag of a run (``w_osgd_s1`` -> ``w``, ``wdalt_sgd_lr0.05_s0`` -> ``wdalt``), or
    None when its name starts with no tag of ``DESIGNS`` (``oracle_w0.25_s0``)."""
    first = name.removeprefix("sweep_").split("_", 1)[0]
    return first if first in DESIGNS else None


def label(name: str) -> str:
    """The report label of a run: its setting without the seed and the design prefix (``w_osgd_s1``
    -> ``osgd``, ``oracle_w0.25_s0`` -> ``oracle_w0.25``); seeds of one setting share it."""
    setting = re.sub(r"_s\d+$", "", name).removeprefix("sweep_")
    return setting.split("_", 1)[1] if design_tag(name) else setting


def finished_runs(results: Path) -> list[Path]:
    """The run folders in ``results`` that ``anytime-eval`` finished (an ``eval.json``), by name; not
    the hidden ``.NAME.partial`` folder of a copy that was cut off."""
    return sorted(p for p in results.iterdir() if not p.name.startswith(".") and (p / "eval.json").is_file())


def final_errors(run: Path) -> tuple[dict, list[float], int]:
    """A result folder's config, final per-stage top-1 errors and epoch: from ``eval.json``, or from
    the last evaluation in ``metrics.jsonl`` when that is later (an evaluation cut short)."""
    import yaml

    result = json.loads((run / "eval.json").read_text())
    errors, epoch = [s["top1_err"] for s in result["stages"]], int(result.get("epoch") or 0)
    for _, record in metric_records(run):
        if "eval_top1_err" in record and int(record["epoch"]) > epoch:
            errors, epoch = record["eval_top1_err"], int(record["epoch"])
    return yaml.safe_load((run / "config.yaml").read_text()), errors, epoch


def last_validation_errors(run: Path) -> list[float] | None:
    """The per-stage validation errors of a run's last evaluation (runs with ``--val-per-class``),
    or None when it has none yet."""
    last = None
    for _, record in metric_records(run):
        if "val_top1_err" in record:
            last = record["val_top1_err"]
    return last
