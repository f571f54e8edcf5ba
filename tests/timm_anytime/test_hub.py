"""Publishing and loading anytime checkpoints: export -> local-dir: / hf-hub: (offline) round trips,
the shipped pretrained tags, and clear errors for corrupt or mismatched checkpoints."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import timm_anytime  # noqa: F401
from tests.shared_data import CIFAR10, needs_cifar10
from tests.timm_anytime.runs import tiny_config, toy_cifar
from timm_anytime.cli.evaluate import main as eval_main
from timm_anytime.cli.push import main as push_main
from timm_anytime.hub import export_run, push_run
from timm_anytime.models.pretrained import SHIPPED, WEIGHTS_DIR, PretrainedWeightsError, shipped_train_config
from timm_anytime.run_evaluation import evaluate_run, resolve_run
from timm_anytime.train import train
from timm_anytime.train.checkpoint import CheckpointError


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = train(tiny_config(tmp_path_factory.mktemp("hub") / "run", method="osgd", epochs=1))
    evaluate_run(folder, latency_inputs=3, device="cpu", progress=False)
    return folder


@pytest.fixture(scope="module")
def exported(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_run(run, tmp_path_factory.mktemp("export") / "me--tiny", repo_id="me/tiny")


def _trained_model(run: Path) -> torch.nn.Module:
    """The run's model built by hand from its config and weights (not through the hub module)."""
    model = timm.create_model("anytime_cifar_resnet20_w124", num_classes=10, in_chans=1, width=0.5)
    model.load_state_dict(load_file(str(run / "model.safetensors")))
    return model.eval()


def _same_stages(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        for left, right in zip(a.forward_stages(x), b.forward_stages(x), strict=True):
            torch.testing.assert_close(left, right, rtol=0, atol=0)


def test_the_exported_folder(exported: Path) -> None:
    assert sorted(p.name for p in exported.iterdir()) == [
        "README.md",
        "config.json",
        "eval.json",
        "model.safetensors",
        "train_config.yaml",
    ]  # no pickle
    config = json.loads((exported / "config.json").read_text())
    assert config["architecture"] == "anytime_cifar_resnet20_w124"
    assert config["model_args"]["width"] == 0.5
    assert config["model_args"]["in_chans"] == 1
    assert config["pretrained_cfg"]["input_size"] == [1, 8, 8]
    assert config["label_names"] == [str(d) for d in range(10)]
    assert "tag" not in config["pretrained_cfg"]  # not the shipped default tag of the architecture
    card = (exported / "README.md").read_text()
    results = json.loads((exported / "eval.json").read_text())
    for stage in results["stages"]:  # the card's table is eval.json's
        assert f"| {stage['stage']} | {stage['top1_err']:.2f} | {stage['top5_err']:.2f} |" in card
    assert 'timm.create_model("hf-hub:me/tiny", pretrained=True)' in card
    assert "anytime-train --config train_config.yaml" in card
    assert "anytime-eval hf-hub:me/tiny --data-dir DATA_DIR --output runs/measured" in card  # run by the offline test
    assert "wan2020orthogonalized" in card


def test_local_dir_round_trip(run: Path, exported: Path) -> None:
    loaded = timm.create_model(f"local-dir:{exported}", pretrained=True).eval()
    assert loaded.num_stages == 3
    _same_stages(loaded, _trained_model(run), torch.randn(4, 1, 8, 8))


def _hub_cache(root: Path, repo_id: str, files: Path) -> Path:
    """A Hugging Face cache laid out as huggingface_hub lays it out (blobs, snapshot links, refs)."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for file in files.iterdir():
        blob = repo / "blobs" / f"blob-{file.name}"
        shutil.copy2(file, blob)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    return root


def test_hf_hub_round_trip_offline(run: Path, exported: Path, tmp_path: Path) -> None:
    cache = _hub_cache(tmp_path / "hub", "me/tiny", exported)
    x = torch.randn(4, 1, 8, 8)
    save_file({"x": x}, str(tmp_path / "x.safetensors"))
    script = (
        "import sys, timm, timm_anytime, torch\n"
        "from safetensors.torch import load_file, save_file\n"
        "model = timm.create_model('hf-hub:me/tiny', pretrained=True).eval()\n"
        "x = load_file(sys.argv[1])['x']\n"
        "with torch.no_grad():\n"
        "    save_file({str(k): y for k, y in enumerate(model.forward_stages(x))}, sys.argv[2])\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")}
    out = tmp_path / "out.safetensors"
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "x.safetensors"), str(out)], env=env, check=True)
    stages = load_file(str(out))
    with torch.no_grad():
        expected = _trained_model(run).forward_stages(x)
    for k, logits in enumerate(expected):
        torch.testing.assert_close(stages[str(k)], logits, rtol=0, atol=0)


def test_shipped_tags_load_offline() -> None:
    # timm lists each checkpoint once, as architecture.tag (no bare architecture beside its tags)
    assert sorted(timm.list_pretrained("anytime_*")) == sorted(SHIPPED)
    total = sum(f.stat().st_size for name in SHIPPED for f in (WEIGHTS_DIR / name).iterdir())
    assert total < 20 * 2**20
    for name in SHIPPED:
        model = timm.create_model(name, pretrained=True)
        weights = load_file(str(WEIGHTS_DIR / name / "model.safetensors"))
        assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
        cfg = json.loads((WEIGHTS_DIR / name / "config.json").read_text())
        assert cfg["architecture"] == name.split(".")[0]
        assert tuple(cfg["pretrained_cfg"]["mean"]) == tuple(model.pretrained_cfg["mean"])
        assert model.pretrained_cfg["hf_hub_id"] == f"timm-anytime/{name}"


def test_an_architectures_default_weights_are_its_first_shipped_tag() -> None:
    """``pretrained=True`` without a tag loads the first shipped checkpoint of the architecture (the
    best one, listed first), read back from its file."""
    first: dict[str, str] = {}
    for name in SHIPPED:
        first.setdefault(name.split(".")[0], name)
    assert first["anytime_cifar_sparse_resnet26_d124"].endswith(".osgd_cutout_cifar10_e200")
    assert first["anytime_cifar_resnet20_w124"].endswith(".osgd_cutout_cifar10_e200")
    for architecture, name in first.items():
        model = timm.create_model(architecture, pretrained=True)
        weights = load_file(str(WEIGHTS_DIR / name / "model.safetensors"))
        assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items()), architecture


def test_the_docs_mark_each_architectures_default_tag() -> None:
    """docs/hub.md's table of shipped checkpoints marks "(default)" exactly the tag that
    ``pretrained=True`` without a tag loads (timm's default pretrained config)."""
    table = (Path(__file__).parents[2] / "docs" / "hub.md").read_text().split("## Shipped checkpoints")[1]
    rows = [line for line in table.splitlines() if line.startswith("| `anytime_")]
    assert {row.split("`")[1] for row in rows} == set(SHIPPED)  # every shipped tag has its rows, no other
    marked = {row.split("`")[1] for row in rows if "(default)" in row.split("|")[1]}
    defaults = {f"{arch}.{timm.models.get_pretrained_cfg(arch).tag}" for arch in {n.split(".")[0] for n in SHIPPED}}
    assert marked == defaults


def test_the_package_readme_quotes_each_default_checkpoints_card() -> None:
    """timm_anytime/README.md (the package's page on PyPI) loads the width-nested default tag and
    quotes each architecture's default checkpoint's test errors as its eval.json has them, so a
    newly shipped default cannot leave the package page quoting the old one."""
    readme = (Path(__file__).parents[2] / "timm_anytime" / "README.md").read_text()
    for architecture in {n.split(".")[0] for n in SHIPPED}:
        name = f"{architecture}.{timm.models.get_pretrained_cfg(architecture).tag}"
        stages = json.loads((WEIGHTS_DIR / name / "eval.json").read_text())["stages"]
        quoted = " / ".join(f"{stage['top1_err']:.1f}" for stage in stages)
        assert f"{quoted}%" in readme, f"timm_anytime/README.md should quote {name}'s {quoted}%"
    width_default = timm.models.get_pretrained_cfg("anytime_cifar_resnet20_w124").tag
    assert f'"anytime_cifar_resnet20_w124.{width_default}"' in readme


def test_shipped_train_configs_name_their_checkpoint_and_refuse_other_names() -> None:
    for name in SHIPPED:
        cfg = shipped_train_config(name)
        assert cfg["model"] == name.split(".")[0]
        assert cfg["method"] == "osgd"
        assert "train_per_class" in cfg  # what calibration_split needs to pick unseen images
    with pytest.raises(ValueError, match="not a shipped checkpoint; shipped: anytime_"):
        shipped_train_config("anytime_cifar_resnet20_w124.no_such_tag")


def test_shipped_weights_adapt_to_new_classes_and_channels() -> None:
    """Fine-tuning starts: timm drops the heads for another num_classes and folds the stem for in_chans."""
    name = SHIPPED[0]
    model = timm.create_model(name, pretrained=True, num_classes=5, in_chans=1)
    weights = load_file(str(WEIGHTS_DIR / name / "model.safetensors"))
    assert model.fc[0].out_features == 5
    assert torch.equal(model.state_dict()["layer3.2.conv2.weight"], weights["layer3.2.conv2.weight"])
    torch.testing.assert_close(model.conv1.weight[:, 0], weights["conv1.weight"].sum(1))


@needs_cifar10
def test_shipped_checkpoints_are_as_accurate_as_their_cards() -> None:
    """Independent of the code that wrote the cards: 500 CIFAR-10 test images, torchvision + timm's
    data config; every stage must be far better than chance and near the card's error."""
    from torchvision import datasets
    from torchvision.transforms import v2

    for name in SHIPPED:
        model = timm.create_model(name, pretrained=True).eval()
        cfg = timm.data.resolve_data_config({}, model=model)
        transform = v2.Compose(
            [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(cfg["mean"], cfg["std"])]
        )
        data = datasets.ImageFolder(str(CIFAR10 / "test"), transform=transform)
        picks = [i for c in range(10) for i in [j for j, t in enumerate(data.targets) if t == c][:50]]
        images = torch.stack([data[i][0] for i in picks])
        labels = torch.tensor([data.targets[i] for i in picks])
        card = json.loads((WEIGHTS_DIR / name / "eval.json").read_text())
        with torch.no_grad():
            for logits, stage in zip(model.forward_stages(images), card["stages"], strict=True):
                error = 100 * float((logits.argmax(1) != labels).float().mean())
                assert error < 45
                assert abs(error - stage["top1_err"]) < 8, (name, stage["stage"], error, stage["top1_err"])


def test_corrupt_and_mismatched_checkpoints(exported: Path, tmp_path: Path) -> None:
    truncated = shutil.copytree(exported, tmp_path / "truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(PretrainedWeightsError, match="truncated or corrupt"):
        timm.create_model(f"local-dir:{truncated}", pretrained=True)

    other = shutil.copytree(exported, tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    config["architecture"] = "anytime_cifar_sparse_resnet26_d124"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(PretrainedWeightsError, match=r"do not fit anytime_cifar_sparse_resnet26_d124.*missing"):
        timm.create_model(f"local-dir:{other}", pretrained=True)

    missing = shutil.copytree(exported, tmp_path / "missing")
    weights = load_file(str(missing / "model.safetensors"))
    del weights["layer1.0.conv1.weight"]
    save_file(weights, str(missing / "model.safetensors"))
    with pytest.raises(PretrainedWeightsError, match=r"missing: layer1\.0\.conv1\.weight"):
        timm.create_model(f"local-dir:{missing}", pretrained=True)

    narrow = shutil.copytree(exported, tmp_path / "narrow")
    config = json.loads((narrow / "config.json").read_text())
    config["model_args"]["width"] = 1.0
    (narrow / "config.json").write_text(json.dumps(config))
    with pytest.raises(PretrainedWeightsError, match=r"wrong shape.*model_args"):
        timm.create_model(f"local-dir:{narrow}", pretrained=True)


def test_export_refuses_unfinished_runs_and_full_folders(run: Path, exported: Path, tmp_path: Path) -> None:
    unfinished = shutil.copytree(run, tmp_path / "unfinished")
    (unfinished / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"has not finished.*--resume"):
        export_run(unfinished, tmp_path / "a")
    unevaluated = shutil.copytree(run, tmp_path / "unevaluated")
    (unevaluated / "eval.json").unlink()
    with pytest.raises(FileNotFoundError, match="anytime-eval"):
        export_run(unevaluated, tmp_path / "b")
    before = (exported / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="not empty"):
        export_run(run, exported)
    assert (exported / "model.safetensors").read_bytes() == before  # nothing saved is lost


def test_an_overwrite_export_that_fails_halfway_keeps_the_earlier_export(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--overwrite replaces an export only once the new one is complete: a failure after the
    weights were written (here, the model card) leaves the earlier folder as it was."""
    import timm_anytime.hub as hub

    folder = export_run(run, tmp_path / "me--tiny")
    before = {f.name: f.read_bytes() for f in folder.iterdir()}

    def card_fails(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(hub, "model_card", card_fails)
    with pytest.raises(OSError, match="No space"):
        export_run(run, folder, overwrite=True, note="a second export")
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["me--tiny"]  # nothing half-written beside it


def test_push_names_a_corrupt_or_foreign_run_checkpoint(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """anytime-push read the run's weights with a raw safetensors call: a truncated file ended in a
    SafetensorError traceback. It is a one-line error now, and the run folder is left as it was."""
    truncated = shutil.copytree(run, tmp_path / "truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[:100])
    assert push_main([str(truncated), "--repo-id=me/tiny", f"--dry-run={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("anytime-push: error: ")
    assert "model.safetensors is not a readable safetensors file" in err
    assert "Traceback" not in err
    assert (truncated / "model.safetensors").read_bytes() == data[:100]
    assert not (tmp_path / "out").exists()  # nothing half-exported

    foreign = shutil.copytree(run, tmp_path / "foreign")  # weights without the first convolution
    weights = load_file(str(foreign / "model.safetensors"))
    del weights["conv1.weight"]
    save_file(weights, str(foreign / "model.safetensors"), metadata={"model": "something_else"})
    with pytest.raises(CheckpointError, match=r"has no tensor 'conv1\.weight': it holds weights for something_else"):
        export_run(foreign, tmp_path / "out2")


def test_anytime_eval_measures_an_exported_folder_as_it_measured_the_run(
    run: Path, exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A checkpoint folder of anytime-push evaluates to the run's own per-input results; its
    eval.json (what the card reports) is never overwritten: without --output, a one-line refusal."""
    card_results = (exported / "eval.json").read_bytes()
    assert eval_main([str(exported), "--latency-inputs=3", "--device=cpu", "--no-progress"]) == 2
    assert "checkpoint folder of anytime-push" in capsys.readouterr().err
    assert (exported / "eval.json").read_bytes() == card_results
    assert not (exported / "eval_outputs.safetensors").exists()

    again = tmp_path / "again"
    assert eval_main([str(exported), f"--output={again}", "--latency-inputs=3", "--device=cpu", "--no-progress"]) == 0
    measured, original = (json.loads((f / "eval.json").read_text()) for f in (again, run))
    for key in ("top1_err", "top5_err", "params", "flops"):
        assert [s[key] for s in measured["stages"]] == [s[key] for s in original["stages"]], key
    assert torch.equal(
        load_file(str(again / "eval_outputs.safetensors"))["correct"],
        load_file(str(run / "eval_outputs.safetensors"))["correct"],
    )


def test_an_interrupted_evaluation_leaves_no_eval_json(run: Path, tmp_path: Path, monkeypatch) -> None:
    """eval.json marks an evaluation as done (anytime-push and the reproduction scripts read it so):
    it is written last, whole, so one cut off before the end leaves none behind."""

    def cut_off(*args, **kwargs) -> None:
        raise KeyboardInterrupt  # the kill lands while the per-input results are written

    monkeypatch.setattr("timm_anytime.run_evaluation.save_file", cut_off)
    with pytest.raises(KeyboardInterrupt):
        evaluate_run(run, output=tmp_path / "out", latency_inputs=1, device="cpu", progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


def test_a_re_evaluation_cut_off_keeps_the_earlier_results(run: Path, tmp_path: Path, monkeypatch) -> None:
    """Evaluating a folder again and being killed while the per-input results are written leaves the
    earlier eval.json and eval_outputs.safetensors as they were (a matching pair)."""
    out = tmp_path / "out"
    evaluate_run(run, output=out, latency_inputs=1, device="cpu", progress=False)
    before = {name: (out / name).read_bytes() for name in ("eval.json", "eval_outputs.safetensors")}

    def cut_off(tensors, filename) -> None:
        Path(filename).write_bytes(b"\x08\x00\x00\x00")  # the first bytes are out, then the kill
        raise KeyboardInterrupt

    monkeypatch.setattr("timm_anytime.run_evaluation.save_file", cut_off)
    with pytest.raises(KeyboardInterrupt):
        evaluate_run(run, output=out, latency_inputs=1, device="cpu", progress=False)
    assert {name: (out / name).read_bytes() for name in before} == before


def test_anytime_eval_reads_a_hub_repository_from_the_cache_offline(run: Path, exported: Path, tmp_path: Path) -> None:
    cache = _hub_cache(tmp_path / "hub", "me/tiny", exported)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")}
    out = tmp_path / "out"
    command = [sys.executable, "-m", "timm_anytime.cli.evaluate", "hf-hub:me/tiny", f"--output={out}"]
    options = ["--latency-inputs=3", "--device=cpu", "--no-progress"]
    subprocess.run([*command, *options], env=env, check=True, capture_output=True)
    measured, original = (json.loads((f / "eval.json").read_text()) for f in (out, run))
    assert [s["top1_err"] for s in measured["stages"]] == [s["top1_err"] for s in original["stages"]]
    missing = subprocess.run(
        [*command[:3], "hf-hub:me/absent", f"--output={out}", *options], env=env, text=True, capture_output=True
    )
    assert missing.returncode == 2, missing.stderr  # not in the cache, offline: one line, no traceback
    assert "Traceback" not in missing.stderr


def test_a_shipped_name_resolves_to_its_folder_and_a_wrong_one_is_not_a_run(tmp_path: Path) -> None:
    assert resolve_run(SHIPPED[0]) == WEIGHTS_DIR / SHIPPED[0]
    assert resolve_run(tmp_path) == tmp_path  # a folder stays itself
    with pytest.raises(FileNotFoundError, match=rf"no_such_tag does not exist: .* shipped checkpoint \({SHIPPED[0]}, "):
        evaluate_run("anytime_cifar_resnet20_w124.no_such_tag", output=tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match=r"is not a run folder .* or a checkpoint folder of anytime-push"):
        evaluate_run(tmp_path, output=tmp_path / "out", progress=False)  # a folder, but neither


@needs_cifar10
@pytest.mark.slow
def test_anytime_eval_of_the_default_shipped_checkpoint_reproduces_its_card(tmp_path: Path) -> None:
    """The shipped folder plus the test split give exactly the errors its card reports (written by
    anytime-eval on the run it came from, at training time)."""
    name = SHIPPED[0]
    result = evaluate_run(name, data_dir=str(CIFAR10), output=tmp_path, latency_inputs=2, progress=False)
    card = json.loads((WEIGHTS_DIR / name / "eval.json").read_text())
    assert result["eval_inputs"] == card["eval_inputs"] == 10_000
    assert [s["top1_err"] for s in result["stages"]] == [s["top1_err"] for s in card["stages"]]


def test_push_cli(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    assert push_main([str(run), "--repo-id=nope"]) == 2
    assert "ORG/NAME" in capsys.readouterr().err
    assert push_main([str(run), "--repo-id=me/tiny", f"--dry-run={tmp_path / 'dry'}", "--note=made in a test"]) == 0
    assert "made in a test" in (tmp_path / "dry" / "README.md").read_text()

    calls = []
    monkeypatch.setattr("huggingface_hub.HfApi", hub_stand_in(calls))
    assert push_run(run, "me/tiny", private=True) == "https://huggingface.co/me/tiny/commit/main"
    assert ("create_repo", "me/tiny", True) in calls
    upload = next(c for c in calls if c[0] == "upload_folder")
    assert upload[1:3] == ("me/tiny", None)
    assert upload[3] == sorted(p.name for p in (tmp_path / "dry").iterdir())

    # a branch that does not exist yet is created before the upload (the Hub refuses a commit to it)
    assert push_main([str(run), "--repo-id=me/tiny", "--revision=v2", "--token=hf_test"]) == 0
    assert "uploaded: https://huggingface.co/me/tiny/commit/v2" in capsys.readouterr().out
    assert ("token", "hf_test") in calls
    assert ("create_branch", "me/tiny", "v2") in calls


def hub_stand_in(calls: list[tuple]) -> type:
    """A stand-in for ``huggingface_hub.HfApi`` that records what would be sent (nothing leaves the
    machine). Each call is checked against the signature of the installed ``HfApi`` method of that
    name, so an argument the real API would refuse fails here too; and, as the Hub does, it refuses
    a commit to a branch that does not exist (``upload_folder`` answers 404; huggingface_hub#1841)."""
    from huggingface_hub import HfApi

    def checked(name: str, api: object, *args, **kwargs) -> inspect.BoundArguments:
        bound = inspect.signature(getattr(HfApi, name)).bind(api, *args, **kwargs)
        bound.apply_defaults()
        return bound

    class StandIn:
        def __init__(self, *args, **kwargs) -> None:
            calls.append(("token", checked("__init__", self, *args, **kwargs).arguments["token"]))
            self.branches = {"main"}

        def create_repo(self, *args, **kwargs) -> str:
            a = checked("create_repo", self, *args, **kwargs).arguments
            calls.append(("create_repo", a["repo_id"], a["private"]))
            return f"https://huggingface.co/{a['repo_id']}"

        def create_branch(self, *args, **kwargs) -> None:
            a = checked("create_branch", self, *args, **kwargs).arguments
            calls.append(("create_branch", a["repo_id"], a["branch"]))
            self.branches.add(a["branch"])

        def upload_folder(self, *args, **kwargs) -> str:
            a = checked("upload_folder", self, *args, **kwargs).arguments
            branch = a["revision"] or "main"
            if branch not in self.branches:
                raise RuntimeError(f"404 Client Error: Invalid rev id: {branch}")
            calls.append(
                ("upload_folder", a["repo_id"], a["revision"], sorted(p.name for p in Path(a["folder_path"]).iterdir()))
            )
            return f"https://huggingface.co/{a['repo_id']}/commit/{branch}"

    return StandIn


def test_the_card_names_every_commit_the_run_trained_under(run: Path, tmp_path: Path) -> None:
    """A resume under another commit, or with uncommitted changes, is on the card, not hidden by
    the last start's short hash (the ``-dirty`` suffix used to be cut off with it)."""
    records = [json.loads(line) for line in (run / "environment.jsonl").read_text().splitlines()]
    clean, other = "a" * 40, "b" * 40
    cases = {
        (clean,): "commit aaaaaaa,",
        (clean, clean): "resumed 1 time(s), timm-anytime commit aaaaaaa,",
        (clean, clean, f"{other}-dirty"): "commits aaaaaaa, then bbbbbbb with uncommitted changes (resumed under a "
        "different commit)",
        (None,): "timm-anytime commit not recorded,",
    }
    for index, (commits, expected) in enumerate(cases.items()):
        copy = tmp_path / f"run{index}"
        shutil.copytree(run, copy)
        starts = [{**records[0], "git_commit": commit} for commit in commits]
        (copy / "environment.jsonl").write_text("".join(json.dumps(start) + "\n" for start in starts))
        card = (export_run(copy, tmp_path / f"export{index}") / "README.md").read_text()
        assert expected in card, (commits, card)
    assert "Fine-tuned" not in card  # these started from a random initialization
    copy = tmp_path / "fine_tuned"
    shutil.copytree(run, copy)
    start = {**records[0], "initial_weights": {"pretrained": "arch.tag", "sha256": "f" * 64}}
    (copy / "environment.jsonl").write_text(json.dumps(start) + "\n" + json.dumps(records[0]) + "\n")
    card = (export_run(copy, tmp_path / "export_ft") / "README.md").read_text()
    assert f"Fine-tuned: it started from the pretrained weights `arch.tag` (SHA-256 {'f' * 64})" in card


def test_the_card_names_every_machine_the_run_trained_on(run: Path, tmp_path: Path) -> None:
    """A run resumed on another machine (a session that starts on a fresh VM) names both, in order,
    not only the last start's."""
    first = json.loads((run / "environment.jsonl").read_text().splitlines()[0])
    amd = {**first, "cpu": "AMD EPYC", "device": "cpu", "gpus": [], "num_processes": 1}
    intel = {**amd, "cpu": "Intel(R) Xeon(R) Processor"}
    gpu = {**amd, "device": "cuda", "gpus": ["NVIDIA H200"], "num_processes": 2}
    cases = [
        ((amd, amd), "Trained on AMD EPYC x 1 process(es), resumed 1 time(s),"),
        (
            (amd, amd, intel, amd),
            "Trained on AMD EPYC x 1 process(es), then Intel(R) Xeon(R) Processor x 1 process(es), then AMD EPYC "
            "x 1 process(es), resumed 3 time(s),",
        ),
        ((gpu,), "Trained on NVIDIA H200 x 2 process(es), timm-anytime"),
    ]
    for index, (starts, expected) in enumerate(cases):
        copy = tmp_path / f"run{index}"
        shutil.copytree(run, copy)
        (copy / "environment.jsonl").write_text("".join(json.dumps(start) + "\n" for start in starts))
        card = (export_run(copy, tmp_path / f"export{index}") / "README.md").read_text()
        assert expected in card, (index, card)


def test_the_card_shows_the_run_s_settings_as_it_recorded_them(run: Path, tmp_path: Path) -> None:
    """A run trained before a setting existed (here: ``cpu_allocator``) must not be shown with
    today's default for it: the card's YAML block is the run's ``config.yaml``, as shipped in
    ``train_config.yaml``, character for character."""
    old = tmp_path / "old_run"
    shutil.copytree(run, old)
    recorded = "".join(
        line
        for line in (run / "config.yaml").read_text().splitlines(keepends=True)
        if not line.startswith("cpu_allocator:")
    )
    assert recorded != (run / "config.yaml").read_text()  # the line was there to remove
    (old / "config.yaml").write_text(recorded)
    folder = export_run(old, tmp_path / "export")
    card = (folder / "README.md").read_text()
    block = card.split("```yaml\n", 1)[1].split("\n```", 1)[0]
    assert block == recorded.strip()
    assert (folder / "train_config.yaml").read_text() == recorded
    assert "cpu_allocator" not in card


def test_the_export_publishes_the_weights_eval_json_measured(tmp_path: Path) -> None:
    """A run with --model-ema evaluated on its averaged weights (``anytime-eval RUN --weights
    RUN/model_ema.safetensors``) publishes those weights with their numbers, never the final ones
    under the average's numbers; and weights that eval.json names but that are gone are an error."""
    run = train(tiny_config(tmp_path / "ema_run", method="osgd", epochs=1, model_ema=True, model_ema_decay=0.5))
    final, averaged = load_file(str(run / "model.safetensors")), load_file(str(run / "model_ema.safetensors"))
    assert not torch.equal(final["conv1.weight"], averaged["conv1.weight"])
    evaluate_run(run, weights=run / "model_ema.safetensors", latency_inputs=2, device="cpu", progress=False)
    results = json.loads((run / "eval.json").read_text())
    assert (results["weights"], results["ema_weights"]) == ("model_ema.safetensors", True)
    folder = export_run(run, tmp_path / "export_ema")
    published = load_file(str(folder / "model.safetensors"))
    for name, value in averaged.items():
        assert torch.equal(published[name], value), name
    assert (
        "exponential moving average of the training weights (`--model-ema`, decay 0.5)"
        in (folder / "README.md").read_text()
    )

    evaluate_run(run, latency_inputs=2, device="cpu", progress=False)  # the final weights again
    results = json.loads((run / "eval.json").read_text())
    assert (results["weights"], results["ema_weights"]) == ("model.safetensors", False)
    published = load_file(str(export_run(run, tmp_path / "export_final") / "model.safetensors"))
    assert torch.equal(published["conv1.weight"], final["conv1.weight"])
    assert "moving average" not in (tmp_path / "export_final" / "README.md").read_text()

    (run / "eval.json").write_text(json.dumps({**results, "weights": "gone.safetensors"}))
    with pytest.raises(FileNotFoundError, match=r"weights gone.safetensors, which are not there: evaluate"):
        export_run(run, tmp_path / "export_gone")


def test_a_cifar10_run_exports_cifar10_preprocessing_and_class_names(tmp_path: Path) -> None:
    """Against the published CIFAR-10 statistics and the shipped default card, which was exported
    the same way: a loaded export gets timm's data config of the training data."""
    data = toy_cifar(tmp_path / "cifar", per_class=2)
    settings = dict(dataset="cifar10", data_dir=str(data), train_per_class=None, eval_per_class=None)
    run = train(tiny_config(tmp_path / "run", batch_size=10, eval_batch_size=10, epochs=1, **settings))
    evaluate_run(run, latency_inputs=1, device="cpu", progress=False)
    folder = export_run(run, tmp_path / "export", repo_id="me/cifar")
    card = json.loads((folder / "config.json").read_text())
    published = {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]}
    for key, value in published.items():
        assert card["pretrained_cfg"][key] == pytest.approx(value)
    assert card["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert card["label_names"][:3] == ["airplane", "automobile", "bird"]
    shipped = json.loads(
        (WEIGHTS_DIR / "anytime_cifar_resnet20_w124.osgd_cutout_cifar10_e200" / "config.json").read_text()
    )
    for key in ("mean", "std", "input_size", "crop_pct"):
        assert card["pretrained_cfg"][key] == shipped["pretrained_cfg"][key], key
    assert card["label_names"] == shipped["label_names"]
    loaded = timm.create_model(f"local-dir:{folder}", pretrained=True)  # the card's model_args: width 0.5
    config = timm.data.resolve_data_config({}, model=loaded)
    assert config["input_size"] == (3, 32, 32)
    assert config["mean"] == pytest.approx(published["mean"])
    assert config["crop_pct"] == 1.0
