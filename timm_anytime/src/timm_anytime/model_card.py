"""The model card (``README.md``) of a published anytime checkpoint: what it is, how it was trained,
what it measured, stage by stage, and how to use it."""

from __future__ import annotations

from typing import Any

CITATION = """@inproceedings{wan2020orthogonalized,
  title     = {Orthogonalized {SGD} and Nested Architectures for Anytime Neural Networks},
  author    = {Wan, Chengcheng and Hoffmann, Henry and Lu, Shan and Maire, Michael},
  booktitle = {International Conference on Machine Learning (ICML)},
  year      = {2020}
}"""

DATASET_IDS = {"cifar10": "cifar10", "cifar100": "cifar100"}


def stage_table(results: dict[str, Any]) -> str:
    """Markdown table of ``eval.json``'s stages: errors, parameters, FLOPs."""
    lines = [
        "| stage | top-1 err % | top-5 err % | params (M) | MFLOPs (D_k alone) | MFLOPs (anytime, through k) |",
        "|---|---|---|---|---|---|",
    ]
    for s in results["stages"]:
        lines.append(
            f"| {s['stage']} | {s['top1_err']:.2f} | {s['top5_err']:.2f} | {s['params'] / 1e6:.3f} | "
            f"{s['flops'] / 1e6:.2f} | {s['anytime_flops'] / 1e6:.2f} |"
        )
    return "\n".join(lines)


def _yaml_block(cfg: Any, train_config: str | None) -> str:
    """The run's settings as its ``config.yaml`` says them (verbatim: a setting added to
    ``TrainConfig`` after the run trained must not appear as if the run had used it), else ``cfg``."""
    if train_config is not None:
        return train_config.strip()
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False).strip()


def _commits(commits: list[str | None]) -> str:
    """The commits a run trained under, as a card says them: short hashes, in order, each marked
    where the tree had uncommitted changes (``environment.jsonl``'s ``-dirty`` suffix) or where
    no commit was recorded (not a git checkout)."""
    from .train.environment import describe_commit  # in the function, as hub.py imports .train: a light import

    said = [describe_commit(commit) for commit in commits]
    if len(said) == 1:
        return f"commit {said[0]}"
    return f"commits {', then '.join(said)} (resumed under a different commit)"


def _averaged(cfg: Any, results: dict[str, Any]) -> str:
    if not results.get("ema_weights"):
        return ""
    decay = getattr(cfg, "model_ema_decay", None)
    return f" The weights are the exponential moving average of the training weights (`--model-ema`, decay {decay})."


def _started_from(initial: dict[str, Any] | None) -> str:
    """The card's words for what the run's weights started from (environment.jsonl's record)."""
    if not initial:
        return ""
    source = initial.get("pretrained") or initial.get("initial_checkpoint")
    digest = f" (SHA-256 {initial['sha256']})" if initial.get("sha256") else ""
    kind = "the pretrained weights" if initial.get("pretrained") else "the weights file"
    return f" Fine-tuned: it started from {kind} `{source}`{digest}, not from a random initialization."


def model_card(
    name: str,
    cfg: Any,
    results: dict[str, Any],
    *,
    repo_id: str | None = None,
    environment: dict[str, Any] | None = None,
    note: str | None = None,
    train_config: str | None = None,
) -> str:
    """The card of checkpoint ``name`` from its run's ``TrainConfig``, ``eval.json`` and training
    environment (``hub.training_environment``); ``note`` is an extra paragraph under Training;
    ``train_config``: the run's ``config.yaml`` text, shown as it is (default: ``cfg`` dumped)."""
    source = f"hf-hub:{repo_id}" if repo_id else "local-dir:PATH_TO_THIS_FOLDER"
    dataset = DATASET_IDS.get(cfg.dataset)
    front = ["---", "tags:", "- image-classification", "- timm", "- anytime", "- osgd", "library_name: timm"]
    front += ["license: apache-2.0"] + ([f"datasets:\n- {dataset}"] if dataset else []) + ["---"]
    subset = f", the first {cfg.train_per_class} training images of each class" if cfg.train_per_class else ""
    stages = len(results["stages"])
    env = environment or {}
    trained = []
    if env:
        resumed = f", resumed {env['starts'] - 1} time(s)" if env.get("starts", 1) > 1 else ""
        commits = env.get("git_commits") or [env.get("git_commit")]
        trained = [
            f"Trained on {env['hardware']}{resumed}, timm-anytime {_commits(commits)}, "
            f"torch {env.get('torch')}, timm {env.get('timm')}.{_started_from(env.get('initial_weights'))}",
            "",
        ]
    return "\n".join(
        [
            *front,
            f"# {name}",
            "",
            f"An anytime image classifier: `{cfg.model}` ({stages} nested stages, each a complete classifier "
            f"that reuses everything the stages before it computed), trained with `{cfg.method}` "
            f"on {cfg.dataset}{subset}, for {cfg.epochs} epochs.{_averaged(cfg, results)} Architecture and methods: "
            "Wan et al., "
            '"Orthogonalized SGD and Nested Architectures for Anytime Neural Networks", ICML 2020; '
            "code: timm-anytime.",
            "",
            "## Results (measured)",
            "",
            f"Evaluated by `anytime-eval` on {results['eval_inputs']} {results['dataset']} test images "
            f"({results['hardware']}). FLOPs are for one image, counted by "
            "`torch.utils.flop_counter`.",
            "",
            stage_table(results),
            "",
            *(
                [
                    "This is a small-scale run, not the paper's 200-epoch schedule on all training images: "
                    "compare it with the paper's numbers for what it is.",
                    "",
                ]
                if cfg.epochs < 200 or cfg.train_per_class
                else []
            ),
            "## Usage",
            "",
            "```python",
            "import timm",
            "import timm_anytime  # registers the anytime architectures",
            "",
            f'model = timm.create_model("{source}", pretrained=True).eval()',
            "logits = model(x)  # the last stage",
            "for k, logits in enumerate(model.forward_anytime(x), start=1):  # stage by stage",
            "    ...  # stop whenever the deadline comes: stage k cost only what it adds",
            "model.set_active_stage(1)  # model(x) now runs the smallest stage alone",
            "```",
            "",
            "## Training",
            "",
            *trained,
            *([note, ""] if note else []),
            "`train_config.yaml` holds every setting of the run. To train it again (with timm-anytime installed):",
            "",
            "```bash",
            "anytime-train --config train_config.yaml --data-dir DATA_DIR --output runs/again",
            "anytime-eval runs/again",
            "```",
            "",
            "To measure these weights again on your copy of the data (the table above, per stage):",
            "",
            "```bash",
            f"anytime-eval {source.removeprefix('local-dir:')} --data-dir DATA_DIR --output runs/measured",
            "```",
            "",
            "```yaml",
            _yaml_block(cfg, train_config),
            "```",
            "",
            "## Citation",
            "",
            "```bibtex",
            CITATION,
            "```",
            "",
        ]
    )
