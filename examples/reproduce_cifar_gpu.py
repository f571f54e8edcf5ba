"""The paper's CIFAR-10 regime on a lent GPU, as one command that fits one device call (issue 15).

All 50,000 training images, the paper's schedule shape (lr 0.1, x0.2 after 30/60/80% of the
epochs, momentum 0.9, batch 128, weight decay 5e-4) after a 5-epoch linear warmup from lr 0.01,
bf16 and channels_last, several runs packed onto the GPU (``anytime-queue``), every epoch
checkpointed. The plan, in order: sgd, osgd and sgd on the summed losses for ResNet-20 w124 and
Sparse ResNet-26 d124 with seed 0, then seeds 1 and 2, then the paper's own architectures
(ResNet-42 w124, Sparse ResNet-98 d1248) with sgd and osgd.

The device machine sees only this repository, so the data travels packed (the JPEG bytes of the
50,000 training images and the first ``--test-per-class`` test images per class, about 47 MB) in
``.device_data/``, which git ignores and the device call carries. Unfinished runs come back to
``results/cifar10_gpu_in_progress/``, which is committed, so that a later session, on a fresh
machine, resumes them. Three steps:

    # here, once: pack the shared JPEG copy
    python examples/reproduce_cifar_gpu.py pack --data-dir ../shared/datasets/cifar10
    # on the device (carry .device_data): unpack, run the plan for 540 s, bundle for the trip back
    export PYTHONPATH=$PWD/osgd/src:$PWD/timm_anytime/src
    python3 examples/reproduce_cifar_gpu.py run --budget-s 540 --out $OUT
    # here, with the files that came back: finished runs -> runs/cifar10_gpu/<run> (weights
    # included) and results/cifar10_gpu/<run> (no weights); unfinished runs' checkpoints ->
    # results/cifar10_gpu_in_progress/ (commit it), which the next ``run`` resumes
    python examples/reproduce_cifar_gpu.py collect /work/.device/<files_at>

Evaluation on the full 10,000-image test split runs here, on CPU, after ``collect``
(``anytime-eval runs/cifar10_gpu/<run> --data-dir ../shared/datasets/cifar10``): the device
monitors training on the packed test images only. ``run --list`` prints the plan and its state.
``run`` with ``--budget-s`` small and ``--epochs 1 --train-per-class 20 --only w_sgd_s0`` is the
CPU smoke test (``tests/timm_anytime/test_reproduce_gpu_script.py``).
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from safetensors.torch import load, save

from timm_anytime.data.memory import list_image_folder
from timm_anytime.run_files import remove_folder, replace_folder

REPO = Path(__file__).resolve().parents[1]
DEVICE_DATA = REPO / ".device_data"
# xz-compressed: 32x32 JPEGs repeat the same ~600 bytes of tables, so 47.8 MB packs into 15 MB and
# the repository plus the pack fit the 64 MiB a device call carries.
PACK = DEVICE_DATA / "cifar10_pack.safetensors.xz"
# Unfinished runs' folders (checkpoints), carried back to the device to resume. Committed, not in
# .device_data: a later session may start on a fresh machine, where only the repository is left.
CAMPAIGN = REPO / "results" / "cifar10_gpu_in_progress"
CAMPAIGN_README = """# GPU campaign runs in progress

Each folder is a run of `examples/reproduce_cifar_gpu.py` that a device call stopped at its budget:
the run folder as `anytime-train` left it (`checkpoint/` holds the last finished epoch, as
safetensors and JSON). `collect` puts it here and the next `run` (the device call carries the
repository) resumes it; when it finishes, `collect` moves its results to `results/cifar10_gpu/`
and deletes its folder here. Commit this folder after each `collect`. See docs/reproduction.md.
"""
TAR_LIMIT = 15 * 2**20  # what comes back from the device: files of at most 16 MiB each
DEVICE_FILES = 8  # the most files that come back from one device call
CARRY_LIMIT = 64 * 2**20  # what a device call may carry: the repository's files and .device_data
DESIGNS = {
    "w": "anytime_cifar_resnet20_w124",
    "d": "anytime_cifar_sparse_resnet26_d124",
    "w42": "anytime_cifar_resnet42_w124",
    "d98": "anytime_cifar_sparse_resnet98_d1248",
}


def protocol(epochs: int, train_per_class: int | None, batch_size: int = 128) -> list[str]:
    flags = ["--dataset=cifar10", f"--epochs={epochs}", f"--batch-size={batch_size}", "--lr=0.1", "--eval-every=5"]
    # Every run warms up linearly over 5 epochs from lr / 10: at lr 0.1 the summed step of osgd (and
    # of sgd_sum) sends ResNet-42 w124 to chance for epochs, also after one epoch at lr / 10
    # (results/resnet42_early_collapse/), a handicap a 30-epoch budget does not absorb.
    flags += ["--warmup-epochs=5", "--warmup-lr=0.01"]
    flags += ["--precision=bf16", "--channels-last", "--no-progress"]
    if train_per_class is not None:
        flags.append(f"--train-per-class={train_per_class}")
    return flags


def plan() -> dict[str, list[str]]:
    """Run name -> the ``anytime-train`` flags that differ from the protocol, most important first."""
    runs: dict[str, list[str]] = {}
    methods = {
        "sgd": ["--method=sgd"],
        "osgd": ["--method=osgd"],
        # SGD's update on the summed losses: OSGD's step size without the projection (lr and warmup lr
        # x3, weight decay /3, so that the decay step is unchanged; three stages).
        "sgd_sum": ["--method=sgd", "--lr=0.3", "--warmup-lr=0.03", f"--weight-decay={5e-4 / 3:.6g}"],
    }
    for seed in (0, 1, 2):
        for tag in ("w", "d"):
            for method, flags in methods.items():
                runs[f"{tag}_{method}_s{seed}"] = [f"--model={DESIGNS[tag]}", *flags, f"--seed={seed}"]
    for tag in ("w42", "d98"):  # the paper's own architectures (sum: d1248 has four stages)
        for method in ("sgd", "osgd"):
            runs[f"{tag}_{method}_s0"] = [f"--model={DESIGNS[tag]}", *methods[method], "--seed=0"]
    return runs


def label(name: str) -> str:
    """The report label of a run: its setting without the seed, so that seeds pool."""
    return name.rsplit("_s", 1)[0].split("_", 1)[1]


# ---------------------------------------------------------------------- the data, packed
def pack(data_dir: Path, test_per_class: int, output: Path = PACK) -> Path:
    """The JPEG bytes of ``train/`` and of the first ``test_per_class`` images per class of
    ``test/``, in sorted order, in one xz-compressed safetensors file (never unpickled)."""
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, str] = {}
    for split, per_class in (("train", None), ("test", test_per_class)):
        if not (data_dir / split).is_dir():
            raise SystemExit(f"no {data_dir / split}: pass --data-dir, the CIFAR-10 ImageFolder tree")
        classes, samples = list_image_folder(data_dir / split, per_class)  # the loader's own order
        blobs = [path.read_bytes() for path, _ in samples]
        sizes = torch.tensor([0] + [len(b) for b in blobs], dtype=torch.int64)
        tensors[f"{split}.bytes"] = torch.frombuffer(bytearray(b"".join(blobs)), dtype=torch.uint8)
        tensors[f"{split}.offsets"] = sizes.cumsum(0)
        tensors[f"{split}.labels"] = torch.tensor([label for _, label in samples])
        meta[f"{split}.classes"] = json.dumps(classes)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(lzma.compress(save(tensors, metadata=meta), preset=3))
    print(
        f"packed {len(tensors['train.labels'])} + {len(tensors['test.labels'])} images into {output} "
        f"({output.stat().st_size / 1e6:.1f} MB)"
    )
    if output.parent == DEVICE_DATA:
        total = warn_if_too_big_to_carry()
        print(
            f"a device call carrying {DEVICE_DATA.name}/ carries {total / 2**20:.1f} of {CARRY_LIMIT / 2**20:.0f} MiB"
        )
    return output


def unpack(source: Path, dest: Path) -> Path:
    """Write the packed images back as an ImageFolder tree (``dest/<split>/<class>/<index>.jpg``,
    the original sorted order kept by the zero-padded index)."""
    if (dest / "complete").exists():
        return dest
    fix = f"run `python examples/reproduce_cifar_gpu.py pack` here and carry {DEVICE_DATA.name}/"
    if not source.is_file():
        raise SystemExit(f"no CIFAR-10 pack at {source}: {fix}")
    try:
        raw = lzma.decompress(source.read_bytes())
    except lzma.LZMAError as error:  # an uncompressed pack of before 459d01d, or a truncated copy
        raise SystemExit(f"{source} is not an xz-compressed pack ({error}): {fix}") from error
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])  # the safetensors header
    meta, tensors = header["__metadata__"], load(raw)
    jobs = []
    for split in ("train", "test"):
        classes = json.loads(meta[f"{split}.classes"])
        data, offsets = tensors[f"{split}.bytes"].numpy(), tensors[f"{split}.offsets"].tolist()
        for index, label in enumerate(tensors[f"{split}.labels"].tolist()):
            path = dest / split / classes[label] / f"{index:05d}.jpg"
            jobs.append((path, data[offsets[index] : offsets[index + 1]]))
    for folder in {path.parent for path, _ in jobs}:
        folder.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda job: job[0].write_bytes(job[1].tobytes()), jobs))
    (dest / "complete").write_text(f"{len(jobs)} images\n")
    return dest


# ---------------------------------------------------------------------- the campaign
def finished(run: Path) -> bool:
    return (run / "model.safetensors").exists()


def commands(
    runs_dir: Path, data_dir: Path, names: list[str], epochs: int, train_per_class: int | None, batch_size: int = 128
) -> list[str]:
    """One shell command per run still to do: a fresh start, or a resume of its checkpoint."""
    lines = []
    python = shlex.quote(sys.executable)
    for name in names:
        run = runs_dir / name
        if finished(run):
            continue
        if (run / "config.yaml").exists():
            cmd = [f"--output={run}", "--resume", "--no-progress"]
        else:
            flags = [*protocol(epochs, train_per_class, batch_size), *plan()[name], f"--name={label(name)}"]
            cmd = [*flags, f"--data-dir={data_dir}", f"--output={run}"]
        lines.append(f"{python} -m timm_anytime.cli.train {shlex.join(cmd)}")
    return lines


def bundle(runs_dir: Path, names: list[str], out: Path) -> list[Path]:
    """Tar every run folder (weights and checkpoints included) into files under the device's size
    limit; a run is never split across two files."""
    out.mkdir(parents=True, exist_ok=True)
    groups: list[list[Path]] = []
    size = 0
    for name in names:
        run = runs_dir / name
        if not run.is_dir():
            continue
        run_size = _size(run)
        if not groups or size + run_size > TAR_LIMIT:
            groups.append([])
            size = 0
        groups[-1].append(run)
        size += run_size
    tars = []
    for index, group in enumerate(groups):
        tars.append(out / f"runs{index}.tar")
        with tarfile.open(tars[-1], "w") as tar:
            for run in group:
                tar.add(run, arcname=run.name)
    return tars


def run_campaign(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    names = args.only or list(plan())
    unknown = sorted(set(names) - set(plan()))
    if unknown:
        raise SystemExit(f"unknown runs {unknown}; `run --list` shows the plan")
    runs_dir = Path(args.runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    for carried in _campaign_runs():  # resume what came back earlier
        if not (runs_dir / carried.name).exists():
            shutil.copytree(carried, runs_dir / carried.name)
    if args.list:
        for name in plan():
            run = runs_dir / name
            state = "finished" if finished(run) else "started" if (run / "config.yaml").exists() else "to do"
            print(f"{name:14s} {state:9s} {shlex.join(plan()[name])}")
        return
    data_dir = unpack(Path(args.pack), Path(args.unpack_to))
    lines = commands(runs_dir, data_dir, names, args.epochs, args.train_per_class, args.batch_size)
    (out / "commands.txt").write_text("\n".join(lines) + "\n")
    commit = _git("rev-parse", "HEAD") or None  # None: the copy on the device has no git metadata
    provenance = {
        "commit": commit,
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")) if commit else None,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "argv": sys.argv,
        "unpack_s": round(time.monotonic() - start, 1),
    }
    budget = max(1.0, args.budget_s - (time.monotonic() - start) - args.bundle_s)
    queue = [sys.executable, "-m", "timm_anytime.cli.queue", str(out / "commands.txt"), f"--jobs={args.jobs}"]
    queue += [f"--logs={out / 'logs'}", f"--budget-s={budget:.0f}", f"--margin-s={args.margin_s}", "--no-progress"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    subprocess.run(queue, check=False, env=env)
    provenance["queue_s"] = round(time.monotonic() - start, 1)
    state = {
        name: ("finished" if finished(runs_dir / name) else "started") for name in names if (runs_dir / name).is_dir()
    }
    provenance["runs"] = state
    (out / "campaign.json").write_text(json.dumps(provenance, indent=1) + "\n")
    logs = out / "logs"
    with tarfile.open(out / "logs.tar", "w") as tar:
        tar.add(logs, arcname="logs")
    shutil.rmtree(logs)
    (out / "commands.txt").unlink()
    tars = bundle(runs_dir, list(state), out)
    files = [f for f in out.rglob("*") if f.is_file()]  # gpu_session.sh may have put gpu_check.tar there
    if len(files) > DEVICE_FILES:
        print(
            f"warning: {len(files)} files in {out}; only {DEVICE_FILES} come back from the device: run fewer --jobs",
            file=sys.stderr,
        )
    print(f"campaign: {json.dumps(state)}; {len(tars)} run bundle(s) in {out} after {time.monotonic() - start:.0f} s")


def collect(args: argparse.Namespace) -> None:
    """Unpack the files that came back. A finished run goes to ``runs/cifar10_gpu/<run>`` (with
    its weights), is evaluated there on the full test split (``anytime-eval``, on this machine),
    and its results without weights go to ``results/cifar10_gpu/<run>``. An unfinished run's
    folder goes to ``results/cifar10_gpu_in_progress/<run>`` (to commit), which the next ``run``
    resumes."""
    source = Path(args.files)
    runs_dir, results = Path(args.runs_dir), Path(args.results)
    campaign = json.loads((source / "campaign.json").read_text())
    # Where the device's copy had no git metadata, the commit is the one this checkout is at, if clean
    # (the device call sends this working tree).
    campaign["collected_at"] = {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }
    for tar_path in sorted(source.glob("runs*.tar")):
        with tarfile.open(tar_path) as tar:
            tar.extractall(runs_dir, filter="data")
    if (source / "logs.tar").exists():
        with tarfile.open(source / "logs.tar") as tar:
            tar.extractall(runs_dir / f"logs_{int(time.time())}", filter="data")
    if (source / "gpu_check.tar").exists():  # examples/gpu_session.sh's measurements
        commit = (campaign["commit"] or campaign["collected_at"]["commit"])[:7]
        dest = Path(args.measurements) / f"{time.strftime('%Y-%m-%d')}_{commit}"
        with tarfile.open(source / "gpu_check.tar") as tar:
            tar.extractall(dest, filter="data")
        print(f"GPU measurements -> {dest / 'gpu_check'}")
    if any(state != "finished" for state in campaign["runs"].values()):
        CAMPAIGN.mkdir(parents=True, exist_ok=True)
        (CAMPAIGN / "README.md").write_text(CAMPAIGN_README)
    for name, state in campaign["runs"].items():
        run = runs_dir / name
        if state != "finished":
            replace_folder(CAMPAIGN / name, lambda staging, run=run: _copy_to_resume(run, staging))
            print(f"{name}: unfinished, kept in {CAMPAIGN / name} for the next run")
            continue
        if args.data_dir is not None:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "timm_anytime.cli.evaluate",
                    str(run),
                    f"--data-dir={args.data_dir}",
                    "--device=cpu",
                    "--no-progress",
                ],
                check=True,
            )

        def keep_results(staging: Path, run: Path = run) -> None:
            staging.mkdir()
            for item in ("config.yaml", "environment.jsonl", "metrics.jsonl", "eval.json", "eval_outputs.safetensors"):
                if (run / item).exists():
                    shutil.copy2(run / item, staging / item)
            (staging / "campaign.json").write_text(json.dumps(campaign, indent=1) + "\n")

        replace_folder(results / name, keep_results)
        # an earlier call's copy to resume from, deleted only now that the results are stored: a
        # failed evaluation leaves it (runs_dir, where the finished run is, may not outlive the session)
        remove_folder(CAMPAIGN / name)
        print(f"{name}: finished -> {results / name}")
    warn_if_too_big_to_carry()


def _copy_to_resume(run: Path, target: Path) -> None:
    """Copy what a resume of ``run`` needs: no half-written ``.partial`` folder of a save that the
    stop cut off, and the previous checkpoint put back if the stop came between a save's renames."""
    from timm_anytime.train.checkpoint import recover_checkpoint  # here, in collect: the trainer's imports

    shutil.copytree(run, target, ignore=shutil.ignore_patterns("*.partial"))
    recover_checkpoint(target / "checkpoint")
    shutil.rmtree(target / "checkpoint.old", ignore_errors=True)


def _campaign_runs() -> list[Path]:
    """The run folders kept in ``CAMPAIGN``, by name: not its README, nor the hidden staging folders
    of a ``collect`` that was cut off."""
    if not CAMPAIGN.is_dir():
        return []
    return sorted(p for p in CAMPAIGN.iterdir() if p.is_dir() and not p.name.startswith("."))


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def _on_disk(files: list[Path]) -> int:
    """Bytes in 4 KiB blocks, as ``du`` counts: the device refused a tree of 63.6 MiB in file sizes
    (67 MiB on disk) at its 64 MiB limit, so the file sizes alone undercount."""
    return sum(-(-f.stat().st_size // 4096) * 4096 for f in files if f.is_file())


def warn_if_too_big_to_carry() -> int:
    """The next device call carries the repository (its tracked files and the untracked ones git
    does not ignore, such as runs just collected) and .device_data: say so if that will not fit.
    Returns what it would carry, in bytes on disk."""
    listed = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    carried = [REPO / f for f in listed if f]
    total = _on_disk(carried) + _on_disk(list(DEVICE_DATA.rglob("*")) if DEVICE_DATA.exists() else [])
    if total > 0.9 * CARRY_LIMIT:
        runs = sorted(_campaign_runs(), key=_size, reverse=True)
        listing = ", ".join(f"{r.name} ({_size(r) / 2**20:.1f} MiB)" for r in runs)
        print(
            f"warning: the next device call would carry {total / 2**20:.1f} MiB (limit "
            f"{CARRY_LIMIT / 2**20:.0f} MiB). Delete some unfinished runs from {CAMPAIGN} (they then "
            f"start again from scratch): {listing}",
            file=sys.stderr,
        )
    return total


def _git(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return result.stdout.strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="pack the CIFAR-10 ImageFolder tree for the device")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared/datasets/cifar10"))
    p.add_argument("--test-per-class", type=int, default=100, help="test images per class for monitoring")
    p.add_argument("--output", default=str(PACK))
    r = sub.add_parser("run", help="run the plan on this machine for --budget-s seconds")
    r.add_argument("--budget-s", type=float, default=540.0, help="the whole command, bundling included")
    r.add_argument("--bundle-s", type=float, default=30.0, help="seconds kept for stopping and bundling")
    r.add_argument("--margin-s", type=float, default=60.0, help="start no run in the last seconds")
    r.add_argument("--jobs", type=int, default=6, help="runs in flight on the GPU")
    r.add_argument("--epochs", type=int, default=30)
    r.add_argument("--batch-size", type=int, default=128, help="the paper's 128 (the lr is not rescaled)")
    r.add_argument("--train-per-class", type=int, default=None, help="fewer images (CPU smoke test)")
    r.add_argument("--only", nargs="+", default=None, help="these runs of the plan")
    r.add_argument("--out", default=os.environ.get("OUT", "runs/gpu_out"), help="what comes back")
    r.add_argument("--runs-dir", default="/tmp/cifar10_gpu_runs")
    r.add_argument("--pack", default=str(PACK))
    r.add_argument("--unpack-to", default="/tmp/cifar10_unpacked")
    r.add_argument("--list", action="store_true", help="print the plan and the state of each run")
    c = sub.add_parser("collect", help="unpack what came back from the device")
    c.add_argument("files", help="the folder holding the returned files")
    c.add_argument("--runs-dir", default=str(REPO / "runs/cifar10_gpu"))
    c.add_argument("--results", default=str(REPO / "results/cifar10_gpu"))
    c.add_argument("--measurements", default=str(REPO / "results/gpu_check"), help="for gpu_check.tar")
    c.add_argument(
        "--data-dir",
        default=str(REPO.parent / "shared/datasets/cifar10"),
        help="full CIFAR-10 tree for the final evaluation ('' to skip it)",
    )
    args = parser.parse_args(argv)
    if args.command == "pack":
        pack(Path(args.data_dir), args.test_per_class, Path(args.output))
    elif args.command == "run":
        run_campaign(args)
    else:
        args.data_dir = args.data_dir or None
        collect(args)


if __name__ == "__main__":
    main()
