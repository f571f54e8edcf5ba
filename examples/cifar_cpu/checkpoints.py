"""The checkpoint protocol (issue 15, item 5): the CIFAR-10 checkpoints this package ships, trained
with OSGD on all 50,000 training images, with the paper's schedule shape (lr 0.1, x0.2 after 30,
60 and 80% of the epochs, momentum 0.9, weight decay 5e-4, batch 128) over 100 epochs (the
paper's: 200), evaluated on the full 10,000-image test split.

A run costs many hours on one CPU core (ResNet-20 w124 with OSGD: about 5 minutes an epoch on
this project's 2-core VM, single-threaded, compiled), so it checkpoints every epoch and the queue
resumes it (``--runs`` outside the worktree keeps the run folder across checkouts):

    python examples/reproduce_cifar_cpu.py --protocol checkpoints --runs ../checkpoint_runs

Its test error is read every 10 epochs to show progress; nothing is chosen on it: the last epoch
is what ships.

After the shipped runs, the plan trains a control that ships nothing: the plain ``cifar_resnet20``
(He et al.'s ResNet-20) with sgd and the same recipe. ResNet-20 w124's last stage is this network
with its weights cut block lower-triangular (11/16 of the dense MACs, SPEC section 3), so the
control's test error is what this recipe reaches on this copy of CIFAR-10 (JPEG, docs/hub.md)
without nesting, the triangular cut or OSGD: a shipped checkpoint's distance from the target
splits into what the recipe and data cost and what the anytime network costs.

Candidates come next: runs that would replace a shipped checkpoint if they reached the target.
Both shipped runs and the control fit their training images to 1-4% error and test at 12-14%
(docs/hub.md), so the first candidate keeps the recipe and adds Cutout (16x16, DeVries & Taylor
2017), which attacks that gap: ``d_osgd_cutout16_s0`` against ``d_osgd_s0`` measures what it does.
It tested at 12.09% (shipped: 12.31%) and ended underfit, so the second, ``d_osgd_e200_cutout16_s0``,
trains it for the paper's 200 epochs (about 8 hours on the 2-core VM, resumed across sessions): 11.38%,
better than the shipped 12.31% on the paired test images and still above the target; it ships as
``anytime_cifar_sparse_resnet26_d124.osgd_cutout_cifar10_e200``.
``w_osgd_e200_cutout16_s0`` does the same for the width-nested run (87-130 s an epoch on 2 threads: 5-7 hours), and
keeps timm's weight average beside it (``--model-ema``, decay 0.9998), which does not change what it trains:
11.82%, better than the shipped 14.09% on the paired test images (its first stage worse), still above the
target; it ships as ``anytime_cifar_resnet20_w124.osgd_cutout_cifar10_e200``.
The 200-epoch Cutout run fit its training images to 2.02% and its gap widened again (9.36 points), so
``d_osgd_e200_cutout16_mixup1_s0`` adds Mixup (alpha 1.0, the Mixup paper's CIFAR-10 value) to it:
paired with it on the test images, it measures what Mixup adds on top of Cutout at 200 epochs.

Both 200-epoch Cutout runs ended above the target, so a second control,
``control_resnet20_sgd_e200_cutout16_s0``, trains the plain ResNet-20 with their recipe: if it ends
above 10% itself, the recipe and data, not the anytime network, keep them there; paired with
each of them, it measures what the nesting and OSGD cost under that recipe. It ended at 10.28%
(above, by 0.28 points, one run), better than both nested runs on the paired test images, so no
further 200-epoch run of these architectures chases the target (the Mixup candidate still trains to its end).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .runs import DEPTH, WIDTH, final_errors, finished_runs

if TYPE_CHECKING:
    from timm_anytime.learning_curves import LearningCurve

#: ``--channels-last --compile`` change float rounding only (docs/training.md). Single-threaded,
#: they made an OSGD step of ResNet-20 w124 at batch 128 1.68x faster on the 2-core VM (2,231 ->
#: 1,327 ms, medians of 8; ``benchmarks/train_step.py --threads 1``, beside two other runs).
CHECKPOINTS = [
    "--dataset=cifar10",
    "--epochs=100",
    "--batch-size=128",
    "--lr=0.1",
    "--eval-every=10",
    "--channels-last",
    "--compile",
]

#: The ``pretrained_cfg`` tag of what this protocol trains (``<architecture>.<tag>``).
TAG = "osgd_cifar10_e100"

#: Issue 15's target for the last stage's test error of the CPU checkpoints, in %.
TARGET_LAST_STAGE_ERR = 10.0

#: The paper's Table 1 (CIFAR-10, OSGD, 200 epochs, mean of 3 runs) for its nearest network of
#: each design, for side-by-side comparison: larger networks than these, trained twice as long.
PAPER_OSGD = {
    "w": ("width-nested ResNet-42 w124", [12.3, 8.9, 7.3]),
    "d": ("depth-nested Sparse ResNet-98 d1248", [10.0, 8.4, 7.4, 6.6]),
}


#: Controls (shipped nothing): run name -> (flags, reference). The reference is He et al. 2016,
#: Table 6: ResNet-20, 8.75% test error after 64k steps at batch 128 (164 epochs of 50,000 images;
#: lr 0.1, /10 at 32k and 48k steps, weight decay 1e-4, the schedule chosen on a 45k/5k split), on
#: the original lossless images.
CONTROLS = {
    "control_resnet20_sgd_s0": (
        ["--model=cifar_resnet20", "--method=sgd"],
        ("ResNet-20, He et al. 2016 (164 epochs)", [8.75]),
    ),
    # The recipe of both shipped defaults (200 epochs, Cutout 16; --model-ema only watches, as in the
    # width-nested run): what that recipe reaches on this data without nesting or OSGD. Registered
    # after both e200 runs ended above the target (11.82 / 11.38%), before this control ran.
    "control_resnet20_sgd_e200_cutout16_s0": (
        ["--model=cifar_resnet20", "--method=sgd", "--epochs=200", "--cutout=16", "--model-ema"],
        ("ResNet-20, He et al. 2016 (164 epochs, no Cutout)", [8.75]),
    ),
}
#: Control -> the runs it is paired with on the test images: those trained with its recipe.
CONTROL_PAIRED_WITH = {
    "control_resnet20_sgd_s0": ("d_osgd_s0", "w_osgd_s0"),
    "control_resnet20_sgd_e200_cutout16_s0": ("d_osgd_e200_cutout16_s0", "w_osgd_e200_cutout16_s0"),
}


def _paper(tag: str) -> tuple[str, list[float]]:
    return f"the paper's {PAPER_OSGD[tag][0]} (OSGD, 200 epochs)", PAPER_OSGD[tag][1]


#: The shipped runs: run name -> (flags, reference), the reference as for the controls.
SHIPPED_RUNS = {
    f"{tag}_osgd_s0": ([f"--model={model}", "--method=osgd"], _paper(tag))
    for tag, model in (("w", WIDTH), ("d", DEPTH))
}

#: Candidates (shipped nothing yet): run name -> (the run it builds on: a shipped run or an earlier
#: candidate; the flags it adds to that run's; a later flag overrides an earlier one, e.g.
#: ``--epochs``), so the pair on the test images measures that change. The first (Cutout, 100
#: epochs) tested 12.09% against the shipped 12.31% and ended underfit (docs/hub.md), so the second
#: gives Cutout the paper's 200 epochs (milestones 60/120/160).
CANDIDATE_CHANGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "d_osgd_cutout16_s0": ("d_osgd_s0", ("--cutout=16",)),
    "d_osgd_e200_cutout16_s0": ("d_osgd_s0", ("--epochs=200", "--cutout=16")),
    # --model-ema only watches (the final weights are bit-identical without it, tests/timm_anytime/
    # test_clip_and_ema.py): the run also measures timm's weight average at this scale. The final
    # weights are the result; the average is reported beside them, never chosen on the test images.
    "w_osgd_e200_cutout16_s0": ("w_osgd_s0", ("--epochs=200", "--cutout=16", "--model-ema")),
    # Registered before it ran, with the change chosen from the depth-nested e200 run's widened gap
    # (docs/hub.md), not from any test error of a Mixup run.
    "d_osgd_e200_cutout16_mixup1_s0": ("d_osgd_e200_cutout16_s0", ("--mixup=1.0", "--model-ema")),
}
CANDIDATE_OF = {name: base for name, (base, _) in CANDIDATE_CHANGES.items()}
#: Candidates that beat the run they were to replace and ship beside it: run name -> shipped tag
#: (``timm_anytime.models.pretrained.SHIPPED``).
SHIPPED_CANDIDATES = {
    "d_osgd_e200_cutout16_s0": "anytime_cifar_sparse_resnet26_d124.osgd_cutout_cifar10_e200",
    "w_osgd_e200_cutout16_s0": "anytime_cifar_resnet20_w124.osgd_cutout_cifar10_e200",
}
#: Run name -> (flags, reference), as for the shipped runs: the base run's flags plus the change.
CANDIDATES: dict[str, tuple[list[str], tuple[str, list[float]]]] = {}
for _name, (_base, _change) in CANDIDATE_CHANGES.items():
    _flags, _published = {**SHIPPED_RUNS, **CANDIDATES}[_base]  # a base is listed before what builds on it
    CANDIDATES[_name] = ([*_flags, *_change], _published)

#: Every run of this protocol, in queue order: the shipped runs, the controls, then the candidates.
RUNS = {**SHIPPED_RUNS, **CONTROLS, **CANDIDATES}


def plan(results: Path | None = None) -> dict[str, list[str]]:
    """Run name -> ``anytime-train`` flags: ResNet-20 w124 first (half the cost of the other), then
    Sparse ResNet-26 d124, then the controls, then the candidates."""
    return {name: flags for name, (flags, _) in RUNS.items()}


def _reference(name: str) -> tuple[str, list[float]] | None:
    """The published result a run of this protocol is compared with: the paper's nearest network
    for a shipped run, the control's own reference, None for a run this protocol does not plan."""
    return RUNS[name][1] if name in RUNS else None


def checkpoints_summary(results: Path) -> str:
    """Markdown: per finished run of this protocol (then the controls and candidates, marked), its test error per
    stage against the target and the published reference, then the convergence rule per run
    (``timm_anytime.learning_curves``)."""
    from timm_anytime.learning_curves import convergence_table, read_learning_curve

    done = [run for run in finished_runs(results) if _reference(run.name) is not None]
    done.sort(key=lambda run: (run.name in CONTROLS) + 2 * (run.name in CANDIDATES))  # stable: by name within
    curves = {run.name: read_learning_curve(run) for run in done}  # each metrics.jsonl read once
    lines = [
        "| run | model | epochs | test err % per stage | last stage <= "
        f"{TARGET_LAST_STAGE_ERR:g}% | final training err % per stage | published |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in done:
        cfg, errors, epoch = final_errors(run)
        train = curves[run.name].train_err[-1]
        reference, reference_errors = _reference(run.name)  # type: ignore[misc]
        kind = "control" if run.name in CONTROLS else "candidate" if run.name in CANDIDATES else None
        shipped_as = SHIPPED_CANDIDATES.get(run.name)
        status = f"shipped as {shipped_as.split('.', 1)[1]}" if shipped_as else "not shipped"
        name = f"{run.name} ({kind}, {status})" if kind else run.name
        lines.append(
            f"| {name} | {cfg['model']} | {epoch} | {' / '.join(f'{e:.2f}' for e in errors)} "
            f"| {'yes' if errors[-1] <= TARGET_LAST_STAGE_ERR else '**no**'} | "
            f"{' / '.join(f'{e:.2f}' for e in train)} | {reference}: {' / '.join(str(e) for e in reference_errors)} |"
        )
    lines += ["", convergence_table(curves)]
    paired = control_comparisons(done)
    return "\n".join(lines + (["", paired] if paired else []))


def control_comparisons(done: list[Path]) -> str:
    """Each control against the last stage of each run trained with its recipe
    (``CONTROL_PAIRED_WITH``), and each candidate against the run it builds on (a shipped run or an
    earlier candidate), paired on the same test images (exact McNemar, from
    ``eval_outputs.safetensors``); empty when no pair has its outputs. One run per side: the test
    covers the sampling of the test images, not the variation between seeds."""
    from safetensors.torch import load_file

    from timm_anytime.significance import mcnemar_test

    def last_stage(run: Path) -> list[bool]:
        return load_file(str(run / "eval_outputs.safetensors"))["correct"][-1].bool().tolist()

    have = [run for run in done if (run / "eval_outputs.safetensors").is_file()]
    pairs = [
        (control, run)
        for control in have
        if control.name in CONTROLS
        for run in have
        if run.name in CONTROL_PAIRED_WITH[control.name]
    ]
    shipped = {run.name: run for run in have if run.name in SHIPPED_RUNS}
    bases = {**shipped, **{run.name: run for run in have if run.name in CANDIDATES}}
    pairs += [(run, bases[CANDIDATE_OF[run.name]]) for run in have if CANDIDATE_OF.get(run.name) in bases]
    lines = [
        f"- {a.name} against {b.name}, last stages: {mcnemar_test(last_stage(a), last_stage(b))}" for a, b in pairs
    ]
    if not lines:
        return ""
    header = "Paired on the test images (right in one only; one run per side, so seed variation is not in the test):"
    return "\n".join([header, *lines])


def plot_checkpoints(results: Path) -> Path:
    """``learning_curves.png`` in ``results``: one panel per finished run (training and test error
    per stage, learning rate)."""
    from timm_anytime.learning_curves import plot_learning_curves, read_learning_curve

    curves = {run.name: read_learning_curve(run) for run in finished_runs(results)}
    return plot_learning_curves(curves, results / "learning_curves.png", max_panels=len(curves) or 1)


def _saved_epoch(weights: Path) -> int:
    """The epoch a checkpoint's weights file was saved at (its safetensors metadata)."""
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as handle:
        return int((handle.metadata() or {})["epoch"])


def compared_with(name: str) -> tuple[str, ...]:
    """The finished runs a run of this protocol is read beside: for a candidate, the run it builds on;
    for a control, the runs of its recipe (``CONTROL_PAIRED_WITH``); none for a shipped run."""
    if name in CONTROL_PAIRED_WITH:
        return CONTROL_PAIRED_WITH[name]
    return (CANDIDATE_OF[name],) if name in CANDIDATE_OF else ()


def snapshot_run(run: Path, into: Path, attempts: int = 5, references: Sequence[Path] = ()) -> str:
    """Copy the run folder ``run`` of a run still training into ``into`` (committable: no lock
    file, metrics cut at the checkpoint's epoch, ``learning_curves.png`` drawn, and
    ``progress.md``: the epoch, the starts and the readings), so that a session that starts on a
    fresh machine can resume it; returns the markdown readings table (test error per stage at every
    reading, the weight average's beside it, and for each of ``references``, finished run folders
    (``compared_with``), that run's test error at the same epochs).

    The trainer replaces ``checkpoint/`` by renaming a complete new folder into place once an
    epoch, so a copy is consistent when the epoch in the run's weights is the same before and after
    it and in every copied weights file: otherwise it is taken again, up to ``attempts`` times."""
    import shutil

    from timm_anytime.learning_curves import metrics_through, plot_learning_curves, read_learning_curve
    from timm_anytime.run_files import replace_folder
    from timm_anytime.train.checkpoint import EMA_FILE, MODEL_FILE

    run, into = Path(run), Path(into)
    if not (run / "config.yaml").is_file() or not (run / "checkpoint" / MODEL_FILE).is_file():
        raise SystemExit(f"{run} is not a run folder with a checkpoint (anytime-train --output): nothing to snapshot")
    beside = [(Path(ref).name, read_learning_curve(ref)) for ref in references]

    def fill(staging: Path) -> tuple[int, LearningCurve]:
        for _ in range(attempts):
            shutil.rmtree(staging, ignore_errors=True)
            try:
                epoch = _saved_epoch(run / "checkpoint" / MODEL_FILE)
                shutil.copytree(run / "checkpoint", staging / "checkpoint", ignore=shutil.ignore_patterns("*.lock"))
                after = _saved_epoch(run / "checkpoint" / MODEL_FILE)
            except FileNotFoundError:  # caught between the trainer's two renames
                continue
            copies = [staging / "checkpoint" / name for name in (MODEL_FILE, EMA_FILE)]
            if after == epoch and all(_saved_epoch(f) == epoch for f in copies if f.is_file()):
                break
        else:
            raise SystemExit(f"{run}/checkpoint changed during each of {attempts} copies: try again (or pause the run)")
        for name in ("config.yaml", "environment.jsonl"):
            shutil.copy2(run / name, staging / name)
        (staging / "metrics.jsonl").write_text(metrics_through(run, epoch))
        curve = read_learning_curve(staging)
        plot_learning_curves({into.name: curve}, staging / "learning_curves.png")
        (staging / "progress.md").write_text(progress_note(staging, into.name, epoch, curve, beside))
        return epoch, curve

    epoch, curve = replace_folder(into, fill)
    return f"{into.name}: epoch {epoch}\n\n{readings_table(curve, beside)}"


def _resumed_at(start: dict) -> str:
    """ ", resumed after epoch N" for a start that resumed from the checkpoint of epoch N, "" for a
    first start or a record from before the trainer kept ``start_epoch``."""
    epoch = start.get("start_epoch")
    return f", resumed after epoch {epoch}" if epoch else ""


def progress_note(
    run: Path, name: str, epoch: int, curve: LearningCurve, references: Sequence[tuple[str, LearningCurve]] = ()
) -> str:
    """Markdown for ``progress.md`` of a snapshot: which epoch of how many the copy holds, each
    start of the run (time, commit, machine) from ``environment.jsonl``, and the readings table
    (with ``references``: the names and curves of the runs it is read beside, ``compared_with``,
    at the same epochs)."""
    from timm_anytime.train.config import TrainConfig
    from timm_anytime.train.environment import describe_commit, run_starts

    config = TrainConfig.load(run / "config.yaml")
    split = "the full test split" if config.eval_per_class is None else f"{config.eval_per_class} test images a class"
    starts = run_starts(run)
    lines = [
        f"# {name}: epoch {epoch} of {config.epochs}",
        "",
        "Written by `python examples/reproduce_cifar_cpu.py --snapshot` from the run still training: this copy",
        f"holds the checkpoint of epoch {epoch}. Starts of the run (`environment.jsonl`):",
        "",
        *(
            f"{i}. {start.get('time_utc', '?')}: commit {describe_commit(start.get('git_commit'))}, "
            f"{start.get('cpu', '?')}, {start.get('torch_threads', '?')} threads{_resumed_at(start)}"
            for i, start in enumerate(starts, 1)
        ),
        "",
        f"Test error on {split} at each reading (progress only: nothing is chosen on it):",
        "",
        readings_table(curve, references),
        "",
    ]
    if references:
        names = ", ".join(f"`{ref}`" for ref, _ in references)
        if name in CONTROL_PAIRED_WITH:
            what = [
                f"The last rows are {names}, the finished runs trained with this control's recipe",
                "(`CONTROL_PAIRED_WITH`; their last stage is what it is paired with), at the same epochs,",
            ]
        else:
            what = [
                f"The last row is {names}, the finished run this one builds on (it differs by the flags",
                "`CANDIDATE_CHANGES` adds), at the same epochs,",
            ]
        lines += [
            *what,
            "from the committed `metrics.jsonl`. One run each: before the learning rate decays, one reading",
            "moves by points from the next, so the rows show how the run is going, not which is better (that",
            "is the paired test on the final weights).",
            "",
        ]
    return "\n".join(lines)


def readings_table(curve: LearningCurve, references: Sequence[tuple[str, LearningCurve]] = ()) -> str:
    """Markdown: epoch, learning rate and test error per stage at each reading, with the weight
    average's (``--model-ema``) below where it was read, and each of ``references`` (a name and
    its curve) with its test error at the same epochs last ("-" where it has no reading)."""
    epochs = sorted(curve.eval_err)
    if not epochs:
        return f"no test readings yet (epochs 1-{curve.epochs[-1]} trained; one every --eval-every epochs)"
    lr = dict(zip(curve.epochs, curve.lr, strict=True))
    rows = [
        ["epoch", *(str(e) for e in epochs)],
        ["lr", *(f"{lr[e]:.4g}" for e in epochs)],
        ["test err % per stage", *(" / ".join(f"{v:.2f}" for v in curve.eval_err[e]) for e in epochs)],
    ]
    if curve.ema_eval_err:
        average = curve.ema_eval_err
        rows.append(["its average", *(" / ".join(f"{v:.2f}" for v in average.get(e, [])) for e in epochs)])
    for name, reference in references:
        theirs = reference.eval_err
        rows.append([f"`{name}`", *(" / ".join(f"{v:.2f}" for v in theirs[e]) if e in theirs else "-" for e in epochs)])
    lines = [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join([lines[0], "|" + "---|" * len(rows[0]), *lines[1:]])
