"""Publish a trained run as a timm model repository on the Hugging Face Hub (``anytime-push``).

``export_run`` writes the folder that is uploaded: timm's ``save_for_hf`` layout (``config.json``
with the architecture, model arguments and ``pretrained_cfg``; ``model.safetensors``, no pickle),
plus the model card ``README.md`` (per-stage results, training command and data, citation), the
run's ``train_config.yaml`` and ``eval.json``. ``push_run`` uploads that folder with
``huggingface_hub``. Loading needs nothing from here:

    import timm, timm_anytime
    model = timm.create_model("hf-hub:ORG/NAME", pretrained=True)      # or "local-dir:FOLDER"
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from timm.models import save_for_hf

from .model_card import model_card
from .models.pretrained import EXPORTED_TRAIN_CONFIG
from .run_files import replace_folder

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _label_names(dataset: str) -> list[str] | None:
    """Class names in label order, where the dataset fixes them (ImageFolder: sorted folder names)."""
    return {"cifar10": list(CIFAR10_CLASSES), "digits": [str(d) for d in range(10)]}.get(dataset)


def _preprocessing(dataset: str) -> dict[str, Any]:
    """The ``pretrained_cfg`` fields that describe the training data's preprocessing."""
    from .data.sources import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, load_digits

    if dataset == "cifar10":
        return {"mean": CIFAR10_MEAN, "std": CIFAR10_STD, "input_size": (3, 32, 32), "crop_pct": 1.0}
    if dataset == "cifar100":
        return {"mean": CIFAR100_MEAN, "std": CIFAR100_STD, "input_size": (3, 32, 32), "crop_pct": 1.0}
    if dataset == "digits":
        spec = load_digits()[2]
        return {"mean": spec.mean, "std": spec.std, "input_size": (1, 8, 8), "crop_pct": 1.0}
    return {}  # a streamed ImageFolder: timm's transforms from the model's own pretrained_cfg


def load_run_model(run: str | Path) -> tuple[torch.nn.Module, dict[str, Any], Any]:
    """The trained model of a finished, evaluated run, its ``eval.json`` and its ``TrainConfig``."""
    import json

    import timm

    from .train.checkpoint import MODEL_FILE, load_weights, weight_shape
    from .train.config import TrainConfig

    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise FileNotFoundError(f"{run} is not a run folder (no config.yaml): pass the --output of anytime-train")
    if not (run / MODEL_FILE).is_file():
        raise FileNotFoundError(
            f"{run} has no final {MODEL_FILE}: the run has not finished. Finish it with "
            f"`anytime-train --output {run} --resume`, then evaluate it."
        )
    if not (run / "eval.json").is_file():
        raise FileNotFoundError(f"{run} has no eval.json for the model card: run `anytime-eval {run}` first")
    cfg = TrainConfig.load(run / "config.yaml")
    results = json.loads((run / "eval.json").read_text())
    weights = evaluated_weights(run, results)
    architecture_cfg = timm.models.get_pretrained_cfg(cfg.model)
    first_conv = (architecture_cfg.first_conv if architecture_cfg is not None else None) or "conv1"
    in_chans = weight_shape(weights, f"{first_conv}.weight")[1]
    model = timm.create_model(cfg.model, num_classes=int(results["num_classes"]), in_chans=in_chans, **cfg.model_kwargs)
    load_weights(weights, model)
    return model.eval(), results, cfg


def evaluated_weights(run: str | Path, results: dict[str, Any]) -> Path:
    """The weights file whose numbers ``results`` (a run's ``eval.json``) holds, so that a model
    card always describes the weights published with it: the final ``model.safetensors``, or
    another file given to ``anytime-eval --weights`` (such as ``model_ema.safetensors``)."""
    from .train.checkpoint import MODEL_FILE

    run = Path(run)
    recorded = results.get("weights")
    if recorded is None:  # written before eval.json recorded its weights
        return run / MODEL_FILE
    path = Path(recorded)
    # relative to the run folder; an older eval.json recorded it as given, relative to where anytime-eval ran
    for candidate in [path] if path.is_absolute() else [run / path, path]:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{run}/eval.json holds the results of the weights {recorded}, which are not there: evaluate the "
        f"weights to publish again (`anytime-eval {run}`, or with --weights FILE)"
    )


def _machine(record: dict[str, Any]) -> str:
    """One start's hardware, as the card names it: its GPUs (or CPU) and processes."""
    gpus = record.get("gpus") or []
    hardware = ", ".join(gpus) if record.get("device", "").startswith("cuda") else record.get("cpu")
    return f"{hardware} x {record.get('num_processes', 1)} process(es)"


def training_environment(run: str | Path) -> dict[str, Any]:
    """What ``environment.jsonl`` says about where a run trained: hardware, starts, versions."""
    import itertools

    from .train.environment import run_starts

    records = run_starts(run)
    if not records:
        return {}
    last = records[-1]
    # every machine the run trained on, in order (consecutive starts on one machine named once): a
    # resume may have landed on another one
    machines = [machine for machine, _ in itertools.groupby(_machine(record) for record in records)]
    return {
        "hardware": ", then ".join(machines),
        "starts": len(records),
        "git_commit": last.get("git_commit"),
        # every commit the run trained under, in order (a resume may have changed it)
        "git_commits": list(dict.fromkeys(record.get("git_commit") for record in records)),
        "torch": (last.get("packages") or {}).get("torch"),
        "timm": (last.get("packages") or {}).get("timm"),
        # what the first start loaded (--pretrained, --initial-checkpoint); None: a random initialization
        "initial_weights": records[0].get("initial_weights"),
    }


def export_run(
    run: str | Path,
    folder: str | Path,
    *,
    repo_id: str | None = None,
    overwrite: bool = False,
    note: str | None = None,
) -> Path:
    """Write the Hub folder of a finished, evaluated run: exactly what ``push_run`` uploads.
    ``note`` is an extra paragraph for the model card (e.g. how the data was prepared)."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise FileExistsError(f"{folder} is not empty: choose another folder or pass overwrite=True (--overwrite)")
    model, results, cfg = load_run_model(run)
    name = repo_id.split("/")[-1] if repo_id else cfg.model
    # The architecture's default cfg may be a shipped checkpoint's: keep none of its identity.
    architecture_cfg: dict[str, Any] = model.pretrained_cfg  # type: ignore[assignment]  # timm's, untyped
    inherited = {k: v for k, v in architecture_cfg.items() if k not in ("tag", "hf_hub_id", "file", "url")}
    tag = name.split(".", 1)[1] if "." in name else None  # ORG/ARCH.TAG names the weights ARCH.TAG
    pretrained_cfg = {
        **inherited,
        **_preprocessing(cfg.dataset),
        "num_classes": model.num_classes,
        **({"tag": tag} if tag else {}),
        **({"hf_hub_id": repo_id} if repo_id else {}),
    }
    model.pretrained_cfg = pretrained_cfg  # type: ignore[assignment]  # a plain dict, as timm keeps it
    model_args = {**cfg.model_kwargs, "in_chans": pretrained_cfg.get("input_size", (3,))[0]}

    def write(staging: Path) -> None:
        labels = _label_names(cfg.dataset)
        model_config = {"label_names": labels} if labels and len(labels) == model.num_classes else None
        save_for_hf(model, str(staging), model_config=model_config, model_args=model_args, safe_serialization=True)
        shutil.copy2(Path(run) / "config.yaml", staging / EXPORTED_TRAIN_CONFIG)
        shutil.copy2(Path(run) / "eval.json", staging / "eval.json")
        card = model_card(
            name,
            cfg,
            results,
            repo_id=repo_id,
            environment=training_environment(run),
            note=note,
            train_config=(staging / EXPORTED_TRAIN_CONFIG).read_text(),
        )
        (staging / "README.md").write_text(card)

    replace_folder(folder, write)  # with overwrite, an export that fails halfway keeps the earlier one
    return folder


def push_run(
    run: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Add anytime model",
    note: str | None = None,
) -> str:
    """Export a run and upload it to ``repo_id`` (created if missing) on branch ``revision`` (created
    from ``main`` if missing; default ``main``); returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_run(run, Path(tmp) / "export", repo_id=repo_id, note=note)
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None:
            # `upload_folder` commits only to an existing branch (the Hub answers 404 otherwise;
            # huggingface_hub#1841); its `hf upload` command creates a missing one, and so do we.
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), revision=revision, commit_message=commit_message
        )
    return str(commit)
