"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint folder holds ``model.safetensors`` (the weights, loadable on their own),
``state.safetensors`` + ``state.json`` (optimizer, scheduler, RNG and loop state: any tree of
dicts, lists, tuples, numbers, strings and tensors) and, for a run with ``--model-ema``,
``model_ema.safetensors`` (the averaged weights, loadable on their own). Folders are written next
to their final place and renamed into it, so an interrupted save never destroys the previous
checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

MODEL_FILE = "model.safetensors"
EMA_FILE = "model_ema.safetensors"  # the exponential moving average of the weights (--model-ema)
STATE_TENSORS, STATE_JSON = "state.safetensors", "state.json"


def run_weights(run: str | Path) -> Path:
    """A run folder's weights: the final ``model.safetensors``, else its last epoch checkpoint's."""
    run = Path(run)
    return run / MODEL_FILE if (run / MODEL_FILE).is_file() else run / "checkpoint" / MODEL_FILE


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read (missing or corrupt files, wrong model)."""


def _flatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """``obj`` as JSON, with every tensor replaced by a reference into ``tensors``."""
    if isinstance(obj, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = obj.detach().cpu().clone().contiguous()  # clone: safetensors refuses shared storage
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = str(len(tensors))
        tensors[key] = torch.from_numpy(obj.astype(np.int64) if obj.dtype == np.uint32 else obj.copy())
        return {"__ndarray__": key, "dtype": str(obj.dtype)}
    if isinstance(obj, dict):  # a list of pairs: keys may be ints (optimizer state) or tuples
        return {"__dict__": [[_flatten(k, tensors), _flatten(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_flatten(v, tensors) for v in obj]
    if isinstance(obj, torch.dtype | torch.device):
        return {"__" + type(obj).__name__ + "__": str(obj)}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot checkpoint a {type(obj).__name__} without pickle: {obj!r:.80}")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return tensors[obj["__ndarray__"]].numpy().astype(obj["dtype"])
    if "__dict__" in obj:
        return {_hashable(_unflatten(k, tensors)): _unflatten(v, tensors) for k, v in obj["__dict__"]}
    if "__tuple__" in obj:
        return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
    if "__dtype__" in obj:
        return getattr(torch, obj["__dtype__"].removeprefix("torch."))
    if "__device__" in obj:
        return torch.device(obj["__device__"])
    raise CheckpointError(f"unknown entry in a checkpoint's state.json: {sorted(obj)}")


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _retired(folder: Path) -> Path:
    """Where :func:`save_checkpoint` moves the previous checkpoint while it puts the new one in place."""
    return folder.with_name(folder.name + ".old")


def recover_checkpoint(folder: str | Path) -> bool:
    """Put the previous checkpoint back if a save was killed between its two renames (``folder``
    missing, its ``.old`` complete beside it); returns whether it did. The resume then repeats one
    epoch. :func:`save_checkpoint` and a resume of ``anytime-train`` call this first."""
    folder = Path(folder)
    retired = _retired(folder)
    if folder.exists() or not retired.is_dir():
        return False
    os.replace(retired, folder)
    return True


def save_checkpoint(
    folder: str | Path,
    model: nn.Module,
    state: dict[str, Any],
    metadata: dict[str, str],
    ema: nn.Module | None = None,
) -> Path:
    """Write ``model``'s weights (and ``ema``'s, the averaged copy, if given) and ``state`` to
    ``folder``, replacing an older checkpoint there only once the new one is complete."""
    folder = Path(folder)
    recover_checkpoint(folder)  # else the line that clears the old copy below would delete the only one
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file(model_state(model), str(staging / MODEL_FILE), metadata=metadata)
    if ema is not None:
        save_file(model_state(ema), str(staging / EMA_FILE), metadata={**metadata, "weights": "ema"})
    tensors: dict[str, torch.Tensor] = {}
    tree = _flatten(state, tensors)
    save_file(tensors, str(staging / STATE_TENSORS))
    (staging / STATE_JSON).write_text(json.dumps(tree))
    retired = _retired(folder)
    shutil.rmtree(retired, ignore_errors=True)
    if folder.exists():
        os.replace(folder, retired)
    os.replace(staging, folder)  # a kill before this leaves no folder: recover_checkpoint mends it
    shutil.rmtree(retired, ignore_errors=True)
    return folder


def load_weights(path: str | Path, model: nn.Module) -> dict[str, str]:
    """Load a ``model.safetensors`` (or a folder holding one) into ``model``; returns its metadata.

    Raises :class:`CheckpointError` naming the file and the problem if it is missing, corrupt or
    made for another architecture.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"no weights at {path}: expected a {MODEL_FILE} file or a folder holding one")
    try:
        weights = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise _unreadable(path, error) from error
    expected = model.state_dict()
    problems = [f"missing {k}" for k in expected if k not in weights]
    problems += [f"unexpected {k}" for k in weights if k not in expected]
    problems += [
        f"{k} is {tuple(weights[k].shape)} here, {tuple(v.shape)} in the model"
        for k, v in expected.items()
        if k in weights and weights[k].shape != v.shape
    ]
    if problems:
        made_for = metadata.get("model", "an unknown model")
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(
            f"{path} holds weights for {made_for} that do not fit this {type(model).__name__} "
            f"(other model arguments?): {'; '.join(problems[:3])}{more}"
        )
    device = next(iter(expected.values()), torch.empty(0)).device
    model.load_state_dict({k: v.to(device) for k, v in weights.items()}, strict=True)
    return metadata


def _unreadable(path: Path, error: Exception) -> CheckpointError:
    return CheckpointError(f"{path} is not a readable safetensors file ({error}); it may be truncated")


def weight_shape(path: str | Path, name: str) -> tuple[int, ...]:
    """The shape of one tensor of a ``model.safetensors``, read from its header alone.

    Raises :class:`CheckpointError` if the file is unreadable or has no tensor ``name``.
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            if name not in handle.keys():  # noqa: SIM118 (safe_open handles have keys(), no __contains__)
                made_for = (handle.metadata() or {}).get("model", "an unknown model")
                raise CheckpointError(f"{path} has no tensor {name!r}: it holds weights for {made_for}")
            return tuple(handle.get_slice(name).get_shape())
    except (SafetensorError, OSError) as error:
        raise _unreadable(path, error) from error


def load_state(folder: str | Path) -> dict[str, Any]:
    """The non-weight training state saved by :func:`save_checkpoint`."""
    folder = Path(folder)
    try:
        tensors = load_file(str(folder / STATE_TENSORS))
        tree = json.loads((folder / STATE_JSON).read_text())
    except FileNotFoundError as error:
        raise CheckpointError(f"checkpoint {folder} is incomplete: {error.filename} is missing") from error
    except (SafetensorError, json.JSONDecodeError, OSError) as error:
        raise CheckpointError(f"checkpoint {folder} is corrupt ({error}); delete it to restart the run") from error
    return _unflatten(tree, tensors)
