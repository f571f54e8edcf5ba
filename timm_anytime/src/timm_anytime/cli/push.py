"""``anytime-push``: publish a trained, evaluated run as a timm model repository on the Hugging Face Hub."""

from __future__ import annotations

import argparse
import sys

from ..hub import export_run, push_run
from . import DefaultsHelpFormatter, run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="anytime-push",
        description="Upload a run folder of anytime-train (finished and evaluated with anytime-eval) to the "
        "Hugging Face Hub: config.json, model.safetensors, a model card with the per-stage results. "
        'Load it with timm.create_model("hf-hub:REPO_ID", pretrained=True) after `import timm_anytime`.',
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("run", help="run folder written by anytime-train and evaluated by anytime-eval")
    p.add_argument("--repo-id", required=True, help="the Hub repository, ORG/NAME (e.g. me/anytime_resnet20.osgd)")
    p.add_argument("--dry-run", metavar="FOLDER", help="write the exact folder that would be uploaded, and stop")
    p.add_argument("--overwrite", action="store_true", help="with --dry-run: replace a non-empty FOLDER")
    p.add_argument("--note", help="an extra paragraph for the model card (e.g. how the training data was prepared)")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--revision", help="branch to upload to, created from main if missing (default: main)")
    p.add_argument("--token", help="Hugging Face token (default: HF_TOKEN or `hf auth login`)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def job() -> None:
        if args.repo_id.count("/") != 1 or not all(args.repo_id.split("/")):
            raise ValueError(f"--repo-id must be ORG/NAME, got {args.repo_id!r}")
        if args.dry_run:
            folder = export_run(args.run, args.dry_run, repo_id=args.repo_id, overwrite=args.overwrite, note=args.note)
            files = ", ".join(sorted(p.name for p in folder.iterdir()))
            print(f"dry run: {folder} holds what would be uploaded to {args.repo_id} ({files})")
            print(f'check it with: timm.create_model("local-dir:{folder}", pretrained=True)')
            return
        commit = push_run(
            args.run, args.repo_id, private=args.private, token=args.token, revision=args.revision, note=args.note
        )
        print(f"uploaded: {commit}")

    return run("anytime-push", job)


if __name__ == "__main__":
    sys.exit(main())
