"""The trainer end to end on tiny runs: every method, the greedy schedule, resume equality."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

import pytest
import timm
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.nn import functional as F

import timm_anytime  # noqa: F401
from osgd import OSGD
from tests.timm_anytime.runs import MODEL, interrupt_in_epoch, tiny_args, tiny_config, weights
from timm_anytime.cpu_allocator import environment_choice
from timm_anytime.train import METHODS, TrainConfig, Trainer, plan_phases, train
from timm_anytime.train.methods import Greedy


def _initial_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    set_seed(seed)
    model = timm.create_model(MODEL, num_classes=10, in_chans=1, width=0.5)
    return {k: v for k, v in model.state_dict().items()}


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_every_stage(tmp_path: Path, method: str) -> None:
    epochs = 3 if method == "greedy" else 2
    run = train(tiny_config(tmp_path / method, method=method, epochs=epochs))
    records = _metrics(run)
    assert [r["epoch"] for r in records] == list(range(1, epochs + 1))
    assert all(len(r["train_loss"]) in (1, 3) for r in records)
    assert len(records[-1]["eval_top1_err"]) == 3
    assert len(records[-1]["eval_top5_err"]) == 3
    assert all(torch.isfinite(torch.tensor(r["train_loss"])).all() for r in records)
    final, initial = weights(run), _initial_weights()
    for stage in range(3):  # every stage's head was trained
        assert not torch.equal(final[f"fc.{stage}.weight"], initial[f"fc.{stage}.weight"]), (method, stage)
    assert not torch.equal(final["conv1.weight"], initial["conv1.weight"])
    for p in ("config.yaml", "environment.jsonl", "checkpoint/state.json", "checkpoint/model.safetensors"):
        assert (run / p).is_file(), p
    environment = json.loads((run / "environment.jsonl").read_text().splitlines()[0])
    assert environment["packages"]["torch"] == metadata.version("torch")
    assert environment["num_processes"] == 1
    if platform.libc_ver()[0] == "glibc" and environment_choice() is None:  # the default: tuned
        assert environment["cpu_allocator"].startswith("tuned ("), environment["cpu_allocator"]


def test_greedy_splits_the_epochs_across_stages() -> None:
    assert [(p.first_epoch, p.num_epochs, p.stage) for p in plan_phases("greedy", 7, 3)] == [
        (0, 3, 1),
        (3, 2, 2),
        (5, 2, 3),
    ]
    assert [(p.first_epoch, p.num_epochs, p.stage) for p in plan_phases("osgd", 7, 3)] == [(0, 7, None)]
    with pytest.raises(ValueError, match="at least one epoch per stage"):
        plan_phases("greedy", 2, 3)


def test_greedy_step_changes_only_the_elements_its_stage_introduces() -> None:
    torch.manual_seed(0)
    model = timm.create_model(MODEL, num_classes=10, in_chans=1, width=0.5)
    owners = model.element_stages()
    before = {name: t.detach().clone() for name, t in model.state_dict().items()}
    rule = Greedy(Accelerator(), model, stage=2)  # (Accelerator() may already be set up on a GPU)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    model.train()
    model.set_active_stage(2)
    for _ in range(2):
        opt.zero_grad()
        x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
        rule.backward([F.cross_entropy(model(x), y)], last_micro=True)
        opt.step()
        rule.after_step()
    names = {id(p): n for n, p in model.named_parameters()}
    after = model.state_dict()
    for param, owner in owners.items():
        name = names[id(param)]
        moved = after[name] != before[name]
        assert not moved[owner != 2].any(), f"{name}: an element of another stage moved"
        assert moved[owner == 2].any(), f"{name}: none of stage 2's elements trained"
    for stage in (1, 3):  # weight decay alone would have shrunk the other heads
        assert torch.equal(after[f"fc.{stage - 1}.weight"], before[f"fc.{stage - 1}.weight"])
    assert not torch.equal(after["fc.1.weight"], before["fc.1.weight"])
    bn = model.bn1  # running statistics: stage 1's channels frozen, stage 2's updated
    owner = bn.stage_of_elements()["weight"]
    moved = after["bn1.running_mean"] != before["bn1.running_mean"]
    assert not moved[owner != 2].any()
    assert moved[owner == 2].all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="bitwise equality holds on the CPU; CUDA kernels vary run to run")
@pytest.mark.parametrize("method", ["osgd", "greedy", "adaloss"])
def test_interrupted_and_resumed_run_ends_with_the_same_weights(
    tmp_path: Path, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 3 epochs, dropout on (so the RNG state matters); greedy crosses a stage boundary at the resume;
    # the weight average (--model-ema) must resume from its own saved state, not restart from the weights;
    # mixup and cutmix draw from numpy's global RNG, which the checkpoint must restore too.
    settings = dict(
        method=method,
        epochs=3,
        model_kwargs={"width": 0.5, "drop_rate": 0.3},
        decay_milestones=[1, 2],
        model_ema=True,
        model_ema_decay=0.9,
        mixup=0.4,
        cutmix=1.0,
    )
    whole = train(tiny_config(tmp_path / "whole", **settings))
    interrupt_in_epoch(tiny_config(tmp_path / "split", **settings), 2, monkeypatch)  # in the third epoch
    assert json.loads((tmp_path / "split" / "checkpoint" / "state.json").read_text())  # epoch 2 saved
    with (tmp_path / "split" / "metrics.jsonl").open("a") as handle:
        handle.write('{"epoch": 3, "lr": 0.0')  # the kill landed while the third epoch was logged
    with (tmp_path / "split" / "environment.jsonl").open("a") as handle:
        handle.write('{"time_utc": "2026-')  # and an earlier kill while a start was recorded
    resumed = train(tiny_config(tmp_path / "split", resume=True, **settings))

    for file in ("model.safetensors", "model_ema.safetensors"):
        expected, got = weights(whole, file), weights(resumed, file)
        assert expected.keys() == got.keys()
        for name in expected:
            assert torch.equal(expected[name], got[name]), (file, name)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in _metrics(whole)]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in _metrics(resumed)] == strip
    starts = [json.loads(line) for line in (resumed / "environment.jsonl").read_text().splitlines()]
    assert len(starts) == 2  # one whole record per start (json.loads refuses the fragment)
    assert [start["start_epoch"] for start in starts] == [0, 2]  # where each start took the run up


def test_a_corrupt_checkpoint_stops_the_resume_and_leaves_the_run_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--resume on a checkpoint whose state file is damaged stops with an error that names it and
    the fix, before anything in the run folder is written: no start recorded, no metrics cut."""
    from timm_anytime.train.checkpoint import CheckpointError

    run = tmp_path / "run"
    interrupt_in_epoch(tiny_config(run), 1, monkeypatch)  # epoch 1 saved
    (run / "checkpoint" / "state.json").write_text('{"epoch": 1, "glob')  # damaged on disk
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match=r"checkpoint .*run/checkpoint is corrupt .*delete it to restart"):
        Trainer(tiny_config(run, resume=True))
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="bitwise equality holds on the CPU; CUDA kernels vary run to run")
def test_a_save_killed_between_its_renames_resumes_from_the_checkpoint_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """save_checkpoint moves the old checkpoint aside, then renames the new one into place; a kill
    between the two leaves no checkpoint/ folder, only checkpoint.old. The resume puts it back and
    repeats one epoch, instead of starting the run over (and the next save deleting the old copy)."""
    import os

    settings = dict(method="osgd", epochs=3, decay_milestones=[1, 2])
    whole = train(tiny_config(tmp_path / "whole", **settings))
    real_replace, renames_into_place = os.replace, []

    def killed_at_the_second_save(source, target) -> None:
        if str(source).endswith("checkpoint.partial"):
            renames_into_place.append(target)
            if len(renames_into_place) == 2:  # epoch 2's save, after epoch 1's moved aside
                raise KeyboardInterrupt
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", killed_at_the_second_save)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path / "split", **settings))
    monkeypatch.setattr(os, "replace", real_replace)
    split = tmp_path / "split"
    assert not (split / "checkpoint").exists()
    assert (split / "checkpoint.old").is_dir()
    first_epoch = (split / "metrics.jsonl").read_text().splitlines()[0]

    resumed = train(tiny_config(split, resume=True, **settings))
    assert (resumed / "metrics.jsonl").read_text().splitlines()[0] == first_epoch  # epoch 1 not trained again
    expected, got = weights(whole), weights(resumed)
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in _metrics(whole)]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in _metrics(resumed)] == strip


def test_a_run_killed_before_its_first_checkpoint_resumes_without_repeating_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trainer logs an epoch, then saves its checkpoint: a kill in between during the first
    epoch leaves a record and no checkpoint. The resume starts over, and logs that epoch once."""
    from timm_anytime.train import trainer

    def killed(*args, **kwargs) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_checkpoint", killed)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path / "run", method="sgd", epochs=2))
    monkeypatch.undo()
    assert [r["epoch"] for r in _metrics(tmp_path / "run")] == [1]
    assert not (tmp_path / "run" / "checkpoint").exists()
    resumed = train(tiny_config(tmp_path / "run", method="sgd", epochs=2, resume=True))
    assert [r["epoch"] for r in _metrics(resumed)] == [1, 2]


def test_a_run_killed_while_it_copies_its_final_weights_does_not_read_as_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run folder's model.safetensors marks a finished run (the GPU campaign, anytime-push): the
    trainer writes it last (after the weight average) and whole, so a kill during the final copies
    leaves none, and the resume writes both."""
    import shutil

    def cut_off(source, target, *args, **kwargs) -> None:
        Path(target).write_bytes(Path(source).read_bytes()[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "copyfile", cut_off)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path / "run", method="sgd", epochs=1, model_ema=True))
    monkeypatch.undo()
    assert [r["epoch"] for r in _metrics(tmp_path / "run")] == [1]  # the cut came after the training
    assert not (tmp_path / "run" / "model.safetensors").exists()
    assert not (tmp_path / "run" / "model_ema.safetensors").exists()
    run = train(tiny_config(tmp_path / "run", method="sgd", epochs=1, model_ema=True, resume=True))
    for file in ("model.safetensors", "model_ema.safetensors"):
        assert (run / file).read_bytes() == (run / "checkpoint" / file).read_bytes()


def test_streamed_image_folder_trains_and_evaluates(tmp_path: Path) -> None:
    """Any ImageFolder tree (images of different sizes) streams through timm's dataset and transforms,
    and CutMix (timm's Mixup) mixes the streamed batches."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 2)):
        for label in ("cat", "dog"):
            folder = tmp_path / "data" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                size = (40 + 3 * i, 36 + 2 * i)
                Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    cfg = tiny_config(
        tmp_path / "run",
        dataset="imagefolder",
        data_dir=str(tmp_path / "data"),
        train_per_class=None,
        eval_per_class=None,
        batch_size=4,
        eval_batch_size=4,
        workers=0,
        epochs=1,
        model_kwargs={"width": 0.25},
        cutmix=1.0,  # mixing works on streamed batches too (it follows either data pipeline)
    )
    run = train(cfg)
    record = _metrics(run)[-1]
    assert len(record["eval_top1_err"]) == 3
    assert all(e in (0.0, 25.0, 50.0, 75.0, 100.0) for e in record["eval_top1_err"])  # 4 evaluation images
    assert weights(run)["fc.0.weight"].shape == (2, 4)  # two classes, found from the folder


def test_multistep_decays_after_the_documented_epochs(tmp_path: Path) -> None:
    """The lr used in each epoch (metrics.jsonl): 30/60/80% of 10 epochs = drops after epochs 3, 6, 8."""
    run = train(tiny_config(tmp_path / "sched", method="sgd", epochs=10, lr=0.1, eval_every=10))
    used = [r["lr"] for r in _metrics(run)]
    expected = [0.1] * 3 + [0.02] * 3 + [0.004] * 2 + [0.0008] * 2
    assert used == pytest.approx(expected, rel=1e-9)
    explicit = train(tiny_config(tmp_path / "explicit", method="sgd", epochs=4, lr=0.1, decay_milestones=[1, 3]))
    assert [r["lr"] for r in _metrics(explicit)] == pytest.approx([0.1, 0.02, 0.02, 0.004], rel=1e-9)


def test_warmup_rises_linearly_from_warmup_lr_inside_the_epochs(tmp_path: Path) -> None:
    """--warmup-epochs 2 --warmup-lr 0.02 to lr 0.1: 0.02, then 0.06, then 0.1, with the decay after
    epoch 4 where it was (the warmup counts inside --epochs); read from metrics.jsonl."""
    run = train(
        tiny_config(
            tmp_path / "warm", method="osgd", epochs=5, lr=0.1, warmup_epochs=2, warmup_lr=0.02, decay_milestones=[4]
        )
    )
    assert [r["lr"] for r in _metrics(run)] == pytest.approx([0.02, 0.06, 0.1, 0.1, 0.02], rel=1e-9)
    with pytest.raises(ValueError, match="warmup_lr must lie between 0 and lr"):
        tiny_config(tmp_path / "bad", lr=0.1, warmup_epochs=1, warmup_lr=0.5).validate()
    with pytest.raises(ValueError, match="warmup_epochs must be a non-negative integer"):
        tiny_config(tmp_path / "bad", warmup_epochs=-1).validate()


def test_environment_records_the_data_and_a_resume_under_another_commit(tmp_path: Path) -> None:
    run = train(tiny_config(tmp_path / "run", method="osgd", epochs=1))
    record = json.loads((run / "environment.jsonl").read_text().splitlines()[0])
    assert record["data"]["train_images"] == 160
    assert record["data"]["eval_images"] == 80
    assert record["data"]["train_per_class"] == 16
    assert "first N images of each class" in record["data"]["selection"]
    assert record["stage_passes"] == "separate"
    assert "resumed_across_commits" not in record
    lines = (run / "environment.jsonl").read_text().splitlines()
    lines[-1] = json.dumps({**json.loads(lines[-1]), "git_commit": "0" * 40})  # as if started elsewhere
    (run / "environment.jsonl").write_text("\n".join(lines) + "\n")
    train(tiny_config(tmp_path / "run", method="osgd", epochs=1, resume=True))  # finished: records, trains no more
    resumed = json.loads((run / "environment.jsonl").read_text().splitlines()[-1])
    assert resumed["resumed_across_commits"] == {"from": "0" * 40, "to": resumed["git_commit"]}


def test_a_recorded_commit_reads_back_as_clean_dirty_or_not_recorded() -> None:
    """The reports that read environment.jsonl (model cards, the converged provenance) decode what
    the trainer writes: a hash, the hash plus DIRTY_SUFFIX, or None (the string "None" after str())."""
    from timm_anytime.train.environment import DIRTY_SUFFIX, describe_commit, is_clean_commit

    commit = "0123456789abcdef" * 2 + "01234567"
    assert (describe_commit(commit), is_clean_commit(commit)) == ("0123456", True)
    dirty = commit + DIRTY_SUFFIX
    assert (describe_commit(dirty), is_clean_commit(dirty)) == ("0123456 with uncommitted changes", False)
    for missing in (None, "", "None"):
        assert (describe_commit(missing), is_clean_commit(missing)) == ("not recorded", False)


def test_a_method_added_to_the_table_trains_from_the_command_line(tmp_path: Path, monkeypatch) -> None:
    """Adding a method is one entry in train/methods.py's TABLE: the CLI, validation and trainer
    read it. A made-up method training the last stage only must give exactly what sgd with
    --stage-weights 0 0 1 gives (CPU runs are deterministic)."""
    from timm_anytime.cli.train import main as train_main
    from timm_anytime.train.methods import TABLE, Method, WeightedSum

    def last_only(inputs):
        return WeightedSum(inputs.accelerator, [0.0, 0.0, 1.0])

    monkeypatch.setitem(TABLE, "last_only", Method("last_only", last_only))
    assert train_main([*tiny_args(tmp_path / "new"), "--method=last_only", "--epochs=1"]) == 0
    sgd_args = ["--method=sgd", "--stage-weights", "0", "0", "1", "--epochs=1"]
    assert train_main([*tiny_args(tmp_path / "sgd"), *sgd_args]) == 0
    new, sgd = weights(tmp_path / "new"), weights(tmp_path / "sgd")
    assert new.keys() == sgd.keys()
    assert all(torch.equal(new[k], sgd[k]) for k in new)
    with pytest.raises(ValueError, match="priority applies to the methods osgd, osgd_norm only"):
        TrainConfig(dataset="digits", method="last_only", priority=[1, 2, 3])


def test_the_priority_reaches_the_combination_one_based(tmp_path: Path, monkeypatch) -> None:
    """``--priority 3 1 2`` means stage 3 first: its gradient passes unprojected, every other is projected.
    (3 1 2 is not its own inverse, so reading it as ranks instead of an order would fail too.)"""
    priority = [3, 1, 2]
    infos = []
    backward = OSGD.backward

    def recording_backward(self, *args, **kwargs):
        info = backward(self, *args, **kwargs)
        infos.append(info)
        return info

    monkeypatch.setattr(OSGD, "backward", recording_backward)
    train(tiny_config(tmp_path / "run", method="osgd", priority=priority, epochs=1))
    assert len(infos) == 4  # 160 digits in steps of 40
    top = priority[0] - 1
    for info in infos:
        assert tuple(info.priority) == tuple(p - 1 for p in priority)
        removed = info.removed_fraction.tolist()
        assert removed[top] == 0.0
        # nested stages share parameters, so every lower-priority gradient loses part of its norm
        assert all(r > 0.0 for i, r in enumerate(removed) if i != top)


def test_label_smoothing_reaches_every_stage_loss_and_cutout_the_training_batches(tmp_path: Path) -> None:
    """The logged training loss of an epoch whose step barely moves the weights (lr 1e-9) equals
    the smoothed cross-entropy written out in float64, (1 - e) * -log p_y + e * mean_c(-log p_c),
    of the initial network on the same batches; osgd's separate stage passes and sgd's single pass."""
    eps = 0.2
    for method in ("osgd", "sgd"):
        cfg = tiny_config(tmp_path / method, method=method, epochs=1, lr=1e-9, smoothing=eps, cutout=3)
        trainer = Trainer(cfg)
        initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        run = trainer.fit()
        assert trainer.loaders.train.cutout == 3
        reference = timm.create_model(MODEL, num_classes=10, in_chans=1, width=0.5).double().train()
        reference.load_state_dict(initial)
        loader = trainer.loaders.train
        loader.set_epoch(0)
        total, count = torch.zeros(3, dtype=torch.float64), 0
        with torch.no_grad():
            for images, labels in loader:
                for stage, logits in enumerate(reference.forward_stages(images.double())):
                    log_p = torch.log_softmax(logits, dim=-1)
                    picked = -log_p[torch.arange(len(labels)), labels]
                    total[stage] += ((1 - eps) * picked + eps * -log_p.mean(dim=-1)).sum()
                count += len(labels)
        logged = _metrics(run)[0]["train_loss"]
        assert logged == pytest.approx((total / count).tolist(), rel=1e-4), method
    with pytest.raises(ValueError, match=r"smoothing must lie in \[0, 1\)"):
        tiny_config(tmp_path / "bad", smoothing=1.0)
    with pytest.raises(ValueError, match="cutout must be a square side"):
        tiny_config(tmp_path / "bad", cutout=-2)
    with pytest.raises(ValueError, match="cutout applies to the in-memory datasets"):
        tiny_config(tmp_path / "bad", dataset="imagefolder", data_dir=str(tmp_path), cutout=16)
