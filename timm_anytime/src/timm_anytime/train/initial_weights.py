"""Where a run's weights start: a random initialization, the model's pretrained weights (timm's
``--pretrained``, e.g. a shipped ``<architecture>.<tag>``), or a safetensors file of the same
architecture (timm's ``--initial-checkpoint``; no pickle). The run records which, with the file's
SHA-256, in ``environment.jsonl``."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from torch import nn

from .checkpoint import MODEL_FILE, load_weights, run_weights


def resolve_initial_checkpoint(path: str | Path) -> Path:
    """The safetensors file ``path`` names: the file itself, or a run folder's final weights (its
    last epoch's while it trains). Raises a clear error for anything else."""
    path = Path(path)
    if path.is_dir():
        weights = run_weights(path)
        if not weights.is_file():
            raise FileNotFoundError(f"initial_checkpoint {path} is a folder without {MODEL_FILE} or a checkpoint")
        return weights
    if not path.is_file():
        raise FileNotFoundError(f"initial_checkpoint {path} does not exist: give a .safetensors file or a run folder")
    if path.suffix != ".safetensors":
        raise ValueError(
            f"initial_checkpoint {path} is not a .safetensors file: only safetensors weights are loaded (never "
            "pickle). Convert it once where you trust it: safetensors.torch.save_file(torch.load(...), 'x.safetensors')"
        )
    return path


def load_initial_checkpoint(path: str | Path, model: nn.Module) -> dict[str, Any]:
    """Load the weights ``path`` names into ``model`` (same keys and shapes, else
    :class:`~timm_anytime.train.checkpoint.CheckpointError`); returns the record of what was loaded."""
    weights = resolve_initial_checkpoint(path)
    load_weights(weights, model)
    return {"initial_checkpoint": str(weights), "sha256": sha256_of(weights)}


def pretrained_record(model: nn.Module) -> dict[str, Any]:
    """What ``pretrained=True`` loaded: the pretrained_cfg's tag and where its weights came from."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    tag = cfg.get("tag")
    record: dict[str, Any] = {"pretrained": f"{cfg.get('architecture')}.{tag}" if tag else cfg.get("architecture")}
    for key in ("hf_hub_id", "file", "url"):
        if cfg.get(key):
            record[key] = cfg[key]
    if cfg.get("file") and Path(cfg["file"]).is_file():
        record["sha256"] = sha256_of(Path(cfg["file"]))
    return record


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
