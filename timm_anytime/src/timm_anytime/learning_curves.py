"""Learning curves of training runs, and whether each run converged.

``anytime-train`` appends one record per epoch to ``metrics.jsonl``: the learning rate, every
stage's training loss and error (on the augmented batches, averaged over the epoch) and, every
``--eval-every`` epochs, the test (``eval_*``) and validation (``val_*``) errors, and with
``--model-ema`` the same for the averaged weights (``ema_eval_*``, ``ema_val_*``). (Greedy trains one
stage at a time, so its records hold the stage in training only.) This module reads
them back, judges convergence by a stated rule, and plots them (``anytime-report`` adds both).

Convergence rule (issue 15): at the last epoch the last stage's training error is under
``max_train_err`` (2%), and its training loss is flat: the mean over the last ``window`` (10%) of
the epochs is within ``max_loss_change`` (5%, relative) of the mean over the ``window`` before, or
the two means differ by less than twice the standard error of their difference (the epoch-to-epoch
noise: near zero, a loss of 0.005 jumps by 25% from epoch to epoch with the augmentation, and two
30-epoch means of it differ by 8% with no trend). Means over windows, because single epochs are
that noisy. A flat loss alone is not enough: it is also flat once the learning rate has decayed to
almost nothing. For greedy, "the epochs" are the last stage's own phase (its own schedule; the
earlier phases train other weights): 10% of the whole run would straddle that phase's last
learning-rate drops and measure the drop, not a trend.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .run_files import read_records


@dataclass
class LearningCurve:
    """One run's ``metrics.jsonl``, by epoch; ``[epoch index][stage]`` for the per-stage lists."""

    epochs: list[int]
    lr: list[float]
    train_loss: list[list[float]]
    train_err: list[list[float]]
    eval_err: dict[int, list[float]] = field(default_factory=dict)  # epoch -> test error per stage
    val_err: dict[int, list[float]] = field(default_factory=dict)  # epoch -> validation error per stage
    # the same for the weight average of --model-ema (empty without it)
    ema_eval_err: dict[int, list[float]] = field(default_factory=dict)
    ema_val_err: dict[int, list[float]] = field(default_factory=dict)
    # greedy's stage in training per epoch (1-based); None where all stages train together
    phase: list[int | None] = field(default_factory=list)

    @property
    def greedy(self) -> bool:
        """Whether greedy trained the stages one after another (its records name the stage)."""
        return bool(self.phase) and self.phase[-1] is not None

    @property
    def num_stages(self) -> int:
        return len(self.train_err[-1])

    def phase_starts(self) -> dict[int, int]:
        """Greedy: 0-based stage -> index of the first epoch of its own phase (of the stages the
        records reached); empty when all stages train together."""
        starts: dict[int, int] = {}
        if self.greedy:
            for index, phase in enumerate(self.phase):
                if phase is not None:
                    starts.setdefault(phase - 1, index)
        return starts


def _metrics_file(path: str | Path) -> Path:
    """``path`` itself, or the ``metrics.jsonl`` in it when it is a run folder; refuses a missing file."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no {path}: learning curves come from the metrics.jsonl of anytime-train")
    return path


def metric_records(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """Each record of a ``metrics.jsonl`` (or the run folder holding it) with its line, blank lines
    skipped. A last line without its newline that does not parse is a record still being written (a
    run logging now) or cut off by a crash; it is left out, since the trainer logs an epoch before it
    saves that epoch's checkpoint and a resume repeats it. Any other line that does not parse raises
    an error naming the file and the line (:func:`timm_anytime.run_files.read_records`)."""
    return read_records(_metrics_file(path))


def metrics_through(path: str | Path, epoch: int) -> str:
    """The lines of a ``metrics.jsonl`` (or the run folder holding it) up to and including ``epoch``,
    as text to write back: what a checkpoint of that epoch has seen (a resumed run, or a snapshot of
    a run still training, drops the epochs logged after its checkpoint)."""
    return "".join(line + "\n" for line, record in metric_records(path) if record["epoch"] <= epoch)


def read_learning_curve(path: str | Path) -> LearningCurve:
    """Read a ``metrics.jsonl`` (or the run folder holding it); greedy's per-stage phases and any
    record without training numbers are skipped."""
    curve = LearningCurve([], [], [], [])
    for _, record in metric_records(path):
        if "train_top1_err" not in record or "epoch" not in record:
            continue
        epoch = int(record["epoch"])
        while curve.epochs and curve.epochs[-1] >= epoch:  # a resume repeated epochs: keep the later records
            for values in (curve.epochs, curve.lr, curve.train_loss, curve.train_err, curve.phase):
                values.pop()
        curve.epochs.append(epoch)
        curve.lr.append(float(record.get("lr", float("nan"))))
        curve.train_loss.append(_as_list(record["train_loss"]))
        curve.train_err.append(_as_list(record["train_top1_err"]))
        curve.phase.append(record.get("greedy_stage"))
        for key, errors in (
            ("eval_top1_err", curve.eval_err),
            ("val_top1_err", curve.val_err),
            ("ema_eval_top1_err", curve.ema_eval_err),
            ("ema_val_top1_err", curve.ema_val_err),
        ):
            if key in record:
                errors[epoch] = _as_list(record[key])
    if not curve.epochs:
        raise ValueError(f"{path} has no training epochs")
    return curve


def _as_list(value: float | Sequence[float]) -> list[float]:
    return [float(v) for v in value] if isinstance(value, Sequence) else [float(value)]


@dataclass
class Convergence:
    final_train_err: list[float]
    loss_change: float  # relative change of the last stage's mean training loss, last window vs the one before
    final_lr: float
    converged: bool
    loss_noise: float = 0.0  # twice the standard error of that change (epoch-to-epoch noise), relative


def convergence(
    curve: LearningCurve, max_train_err: float = 2.0, max_loss_change: float = 0.05, window: float = 0.1
) -> Convergence:
    """Apply the module's convergence rule to ``curve``. A run of one epoch has no loss trend to
    judge: its change and noise are NaN and it is not converged."""
    final = curve.train_err[-1]
    losses = [loss[-1] for loss in curve.train_loss[_last_phase_start(curve) :]]
    if len(losses) < 2:
        return Convergence(final, math.nan, curve.lr[-1], False, math.nan)
    width = max(1, min(round(window * len(losses)), len(losses) // 2))
    last = losses[-width:]
    before = losses[-2 * width : -width]
    mean_before = statistics.fmean(before)
    scale = max(abs(mean_before), 1e-12)
    change = abs(statistics.fmean(last) - mean_before) / scale
    spread = sum(statistics.variance(w) / len(w) for w in (last, before) if len(w) > 1)
    noise = 2 * math.sqrt(spread) / scale
    flat = change < max_loss_change or change <= noise
    return Convergence(final, change, curve.lr[-1], final[-1] < max_train_err and flat, noise)


def _last_phase_start(curve: LearningCurve) -> int:
    """Index of the first epoch of the last stage's own schedule: 0 unless greedy trained the stages
    one after another (the earlier phases train other weights on their own schedules)."""
    last = curve.phase[-1] if curve.phase else None  # not None exactly when curve.greedy
    return curve.phase_starts()[last - 1] if last is not None else 0


def fit_epoch(curve: LearningCurve, max_train_err: float = 1.0, window: int = 10) -> int | None:
    """How soon the last stage fits its training images: the first epoch from which the mean of the
    last stage's training error over every ``window`` consecutive epochs (the last ones: over what
    is left) stays under ``max_train_err`` %, or None if it never does. For greedy, within the last
    stage's own phase (the earlier phases' records are other stages' errors)."""
    start = _last_phase_start(curve)
    errors = [err[-1] for err in curve.train_err[start:]]
    means = [statistics.fmean(errors[i : i + window]) for i in range(len(errors))]
    first = None
    for i in reversed(range(len(means))):
        if means[i] >= max_train_err:
            break
        first = curve.epochs[start + i]
    return first


def convergence_table(curves: Mapping[str, LearningCurve]) -> str:
    """Markdown: per run, the final training error per stage, the loss change, the verdict, and
    :func:`fit_epoch`."""
    lines = [
        "| run | epochs | final lr | final training err % per stage | last-stage mean loss, last 10% of epochs "
        "(greedy: of the last stage's phase) against the 10% before (noise: 2 SE) "
        "| converged (last stage < 2%, change < 5% or within noise) "
        "| last stage under 1% (10-epoch means) from epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, curve in curves.items():
        c = convergence(curve)
        errors = " / ".join(f"{e:.2f}" for e in c.final_train_err)
        verdict = "yes" if c.converged else "**no**"
        change = (
            "n/a (one epoch)"
            if math.isnan(c.loss_change)
            else f"{100 * c.loss_change:.1f}% ({100 * c.loss_noise:.1f}%)"
        )
        fit = fit_epoch(curve)
        lines.append(
            f"| {name} | {curve.epochs[-1]} | {c.final_lr:.3g} | {errors} | {change} | {verdict} "
            f"| {'never' if fit is None else fit} |"
        )
    return "\n".join(lines)


def _training_lines(curve: LearningCurve) -> dict[int, tuple[list[int], list[float]]]:
    """0-based stage -> (epochs, training error %) to draw: every stage over the whole run, or, for
    greedy (whose records hold the stage in training only), each stage over its own phase."""
    if not curve.greedy:
        return {k: (curve.epochs, [e[k] for e in curve.train_err]) for k in range(curve.num_stages)}
    lines: dict[int, tuple[list[int], list[float]]] = {}
    for epoch, phase, errors in zip(curve.epochs, curve.phase, curve.train_err, strict=True):
        if phase is None:  # a record written before greedy_stage was: its stage is unknown
            continue
        epochs, values = lines.setdefault(phase - 1, ([], []))
        epochs.append(epoch)
        values.append(errors[-1])
    return lines


def _evaluation_lines(
    curve: LearningCurve, errors: Mapping[int, list[float]]
) -> dict[int, tuple[list[int], list[float]]]:
    """0-based stage -> (epochs, test or validation error %) to draw, from ``{epoch: per-stage
    errors}``: every evaluation, except that a greedy stage is drawn from its own phase on (before
    it, its exit is an untrained head at chance)."""
    starts = {stage: curve.epochs[index] for stage, index in curve.phase_starts().items()}
    lines: dict[int, tuple[list[int], list[float]]] = {}
    for stage in range(min((len(e) for e in errors.values()), default=0)):
        if curve.greedy and stage not in starts:
            continue  # a stage whose phase the records never reached
        points = [(epoch, e[stage]) for epoch, e in errors.items() if epoch >= starts.get(stage, 0)]
        if points:
            lines[stage] = ([epoch for epoch, _ in points], [value for _, value in points])
    return lines


def plot_learning_curves(curves: Mapping[str, LearningCurve], path: str | Path, max_panels: int = 12) -> Path:
    """One panel per run (the first ``max_panels``): training error per stage (lines; greedy: each
    stage during its own phase), test error (dashed, markers) and validation error (dotted) of every
    evaluated stage (greedy: from its own phase on), and those of the ``--model-ema`` weight average
    (dash-dot, triangles), against the epoch, learning rate on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(curves)[:max_panels]
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        curve = curves[name]
        for stage, (epochs, errors) in _training_lines(curve).items():
            ax.plot(epochs, errors, color=f"C{stage}", label=f"stage {stage + 1} train")
        evaluations = (
            (curve.eval_err, "o--", "test"),
            (curve.val_err, "s:", "val"),
            (curve.ema_eval_err, "^-.", "test, EMA"),
            (curve.ema_val_err, "v-.", "val, EMA"),
        )
        for records, style, what in evaluations:
            for stage, (epochs, values) in _evaluation_lines(curve, records).items():
                ax.plot(epochs, values, style, color=f"C{stage}", ms=3, label=f"stage {stage + 1} {what}")
        ax.set(title=name, xlabel="epoch", ylabel="top-1 error (%)", ylim=(0, None))
        ax.grid(alpha=0.3)
        lr_ax = ax.twinx()
        lr_ax.step(curve.epochs, curve.lr, where="post", color="grey", lw=0.8, alpha=0.6)
        lr_ax.set_ylabel("lr", color="grey")
        lr_ax.set_yscale("log")
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
