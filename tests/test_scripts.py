"""Every script under benchmarks/ and examples/ still imports what it uses and parses ``--help``.

Their real runs are too long for CI (examples/ has its own tests for the parts users rely on; two
benchmarks that nothing else runs get a run at a tiny size here), so
without this a refactor that moves a name breaks a benchmark silently, as one did
(``OSGD_METHODS`` left ``train.config`` and ``benchmarks/train_step.py`` failed on import). The
scripts run in this process (``runpy``), so torch and timm are imported once, not per script.
"""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import timm

from tests.scripts import ROOT, load_script
from tests.shared_data import needs_cifar10

SCRIPTS = sorted([*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "examples").glob("*.py")])


def test_the_scripts_are_found() -> None:
    names = {p.name for p in SCRIPTS}
    assert {"train_step.py", "anytime_compare.py", "reproduce_cifar_cpu.py"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_script_help(script: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", [script.name, "--help"])
    monkeypatch.syspath_prepend(str(script.parent))  # as `python SCRIPT` puts the script's folder first
    with pytest.raises(SystemExit) as exit_info:  # argparse's --help exits with status 0
        runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code in (0, None)
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("script", "args", "printed"),
    [
        ("benchmarks/stripe_convs.py", ["--threads=1", "--rounds=2", "--inner=1"], "| 64, 8x8 |"),
        (
            "benchmarks/osgd_step.py",
            ["--batch=4", "--size=8", "--width=4", "--rounds=2", "--warmup=1", "--threads=1"],
            "osgd: ",
        ),
    ],
)
def test_benchmarks_no_other_test_runs_complete_at_a_tiny_size(
    script: str, args: list[str], printed: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The two benchmarks whose results docs quote and that no other test runs (seconds at this size)."""
    import torch

    monkeypatch.setattr(sys, "argv", [script, *args])
    monkeypatch.syspath_prepend(str((ROOT / script).parent))
    threads = torch.get_num_threads()
    try:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    finally:
        torch.set_num_threads(threads)  # both set it for their own process
    out = capsys.readouterr().out
    assert printed in out
    assert not re.search(r"\bnan\b", out, re.IGNORECASE), out


@pytest.mark.parametrize("script", ["benchmarks/gpu_check.sh", "examples/gpu_session.sh"])
def test_shell_scripts_are_valid_bash(script: str) -> None:
    """Syntax only; tests/timm_anytime/test_reproduce_gpu_script.py runs both on the CPU."""
    result = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_packed_run_that_fails_before_its_window_releases_the_others(tmp_path: Path) -> None:
    """benchmarks/concurrent_runs.py: a run that dies in its setup (here an unknown model; an OOM at
    8 runs on a GPU) marks the barrier failed, and a run waiting there stops at once instead of
    holding the device call for its 600 s timeout."""
    barrier = tmp_path / "barrier"
    script = str(ROOT / "benchmarks/concurrent_runs.py")
    failing = subprocess.run(
        [sys.executable, script, "--model=no_such_model", "--worker", f"--barrier={barrier}", "--runs=2"],
        capture_output=True,
        text=True,
    )
    assert failing.returncode != 0
    assert "no_such_model" in failing.stderr
    assert list(barrier.glob("failed_*")) != []
    concurrent = load_script("benchmarks/concurrent_runs.py")
    with pytest.raises(SystemExit, match="another run failed before its timed window"):
        concurrent.wait_for_all(barrier, runs=2, timeout_s=5.0)
    concurrent.wait_for_all(tmp_path / "all_ready", runs=1, timeout_s=5.0)  # alone: returns at once


def test_osgd_multitask_example_reports_sample_sd_and_welch_tests(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The table's spread is the sample sd over seeds (not the population sd, which understates a
    3-seed spread by a factor 0.82), and every method gets a Welch test against SGD."""
    example = load_script("examples/osgd_multitask_digits.py")
    # seeds give digit accuracy 90 and 94: sample sd 2.83 (population sd 2.0); SGD 80 and 82
    fake = {0: 90.0, 1: 94.0}
    monkeypatch.setattr(example, "load_digits_tensors", lambda: None)
    monkeypatch.setattr(
        example,
        "train",
        lambda options, seed, epochs, data: {
            "digit": fake[seed] if options["method"] != "sum" else 80.0 + 2 * seed,
            "parity": 50.0 + seed,
            "reconstruction": 0.1,
            "cos(digit, recon)": 0.0,
        },
    )
    monkeypatch.setattr(example, "plot", lambda results, path: None)
    monkeypatch.setattr(sys, "argv", ["osgd_multitask_digits.py", "--seeds", "2", "--epochs", "1"])
    example.main()
    out = capsys.readouterr().out
    assert "n = 2 seeds, mean (sample sd)" in out
    osgd_row = next(line for line in out.splitlines() if line.startswith("osgd  "))
    assert "92.0 (2.8)" in osgd_row
    # Welch: 92 - 81 = +11, from the closed form with sds 2.83 and 1.41 (df 1.47)
    welch = out.split("minus sum (SGD)")[1]
    osgd_test = next(line for line in welch.splitlines() if line.startswith("osgd  "))
    assert osgd_test.split()[1] == "+11.0"
    assert "no spread: untestable" in osgd_test  # reconstruction: every seed gave 0.1


def _compare_revisions():
    return load_script("benchmarks/compare_revisions.py")


def test_compare_revisions_reads_the_ratios_benchmarks_print() -> None:
    """The ratio lines of ``anytime_inference.py`` and ``train_step.py``, each named by its section."""
    output = """anytime inference benchmark: CPU (AMD EPYC, 2 threads), torch 2.14.1, timm 1.0

anytime_cifar_resnet20_w124, batch 1 at 32x32 (median seconds per call)
  full (last stage alone)      0.0031
  anytime, all 3 stages       0.0059  = 1.90x full (target <= 1.10)
  stage 1: active 0.0012  dense 0.0010  = 1.20x dense (target <= 1.10)

anytime_cifar_resnet20_w124, batch 64 at 32x32 (median seconds per call)
  stage 1: active 0.0120  dense 0.0110  = 1.09x dense (target <= 1.10)
sgd in this layout / sgd (plain): 0.77
"""
    ratios = _compare_revisions().parse_ratios(output)
    assert ratios == {
        ("anytime_cifar_resnet20_w124, batch 1 at 32x32", "anytime, all 3 stages"): 1.90,
        ("anytime_cifar_resnet20_w124, batch 1 at 32x32", "stage 1: active"): 1.20,
        ("anytime_cifar_resnet20_w124, batch 64 at 32x32", "stage 1: active"): 1.09,
        ("", "sgd in this layout / sgd (plain)"): 0.77,
    }


def test_compare_revisions_reads_table_columns_with_a_pattern() -> None:
    table = """      method    passes   ms/step   x sgd    img/s
 sgd (plain)    single     352.6    1.51      363
         sgd    single     233.1    1.00      549
        osgd  separate     428.0    1.84      299
"""
    parse = _compare_revisions().parse_ratios
    pattern = r"^\s*(?P<name>osgd|sgd \(plain\))\s+\S+\s+\S+\s+(?P<value>\S+)"
    assert parse(table, pattern) == {("", "sgd (plain)"): 1.51, ("", "osgd"): 1.84}
    with pytest.raises(ValueError, match="named groups"):
        parse(table, r"osgd\s+(\S+)")


def test_compare_revisions_runs_both_revisions_and_cleans_up(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """End to end against the committed HEAD and the working tree: two runs each, alternating, a
    Welch line per ratio, and no worktree left behind."""
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True).returncode != 0:
        pytest.skip("not a git checkout with a commit")
    before = subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True).stdout
    # a "benchmark" that prints a ratio that differs between the runs
    code = "import random; print('bench'); print(f'  step {random.uniform(1, 2):.3f} = {random.uniform(1, 2):.3f}x')"
    monkeypatch.setattr(sys, "argv", ["compare_revisions.py", "HEAD", "WORKTREE", "--reps", "2", "--", "-c", code])
    _compare_revisions().main()
    out = capsys.readouterr().out
    assert out.count("run 1/2 at") == 2
    assert out.count("run 2/2 at") == 2
    row = next(line for line in out.splitlines() if line.strip().startswith("step"))
    assert "Welch t" in row
    assert "n = 2/2" in row
    after = subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True).stdout
    assert after == before


def test_compare_revisions_refuses_a_tree_whose_runs_import_other_code(tmp_path: Path) -> None:
    """A tree without the packages imports the installed copy: both revisions would run the same code."""
    module = _compare_revisions()
    module.check_imports(ROOT)  # this checkout imports itself
    with pytest.raises(SystemExit, match=r"not the revision's own code|cannot import"):
        module.check_imports(tmp_path)


def _targets():
    return load_script("benchmarks/targets.py")


_STEP_TABLE = """anytime_cifar_resnet20_w124, batch 128, 32x32, precision no, default layout, on CPU x86_64 (2 threads)
      method    passes   ms/step   x sgd    img/s  peak MiB mem x sgd
 sgd (plain)    single     352.6    1.51      363
         sgd    single     233.1    1.00      549     500.0      1.00
        osgd  separate     428.0    1.84      299     505.0      1.01
     normsgd  separate     457.0    1.96      280     506.0      1.01
   osgd_norm  separate     442.9    1.90      289     505.5      1.01
sgd in this layout / sgd (plain): 0.66
"""


def test_targets_read_train_step_rows_and_ratio_lines() -> None:
    targets = _targets()
    assert targets.step_value("osgd", "x_sgd")(_STEP_TABLE) == 1.84
    assert targets.step_value("sgd (plain)", "x_sgd")(_STEP_TABLE) == 1.51
    assert targets.step_value("normsgd", "mem_x_sgd")(_STEP_TABLE) == 1.01
    assert targets.step_value("sgd", "img_s")(_STEP_TABLE) == 549
    assert targets.ratio_value("", "sgd in this layout")(_STEP_TABLE) == 0.66
    with pytest.raises(targets.MissingValue, match="greedy"):
        targets.step_value("greedy", "x_sgd")(_STEP_TABLE)
    with pytest.raises(targets.MissingValue, match="mem_x_sgd"):  # the row has no memory columns
        targets.step_value("sgd (plain)", "mem_x_sgd")(_STEP_TABLE)


def test_targets_verdict_uses_the_confidence_interval_of_the_mean() -> None:
    """One run: the value against the limit. Several: met or missed only when the whole 95% CI
    (mean +/- t(0.975, n-1) sd / sqrt(n); t = 4.303 for n = 3, 12.706 for n = 2) is on one side."""
    targets = _targets()
    at_most = targets.Target("t", ("x",), float, 1.85)
    at_least = targets.Target("t", ("x",), float, 25_000, at_least=True)
    assert targets.verdict(at_most, [1.84]) == "met"
    assert targets.verdict(at_most, [1.86]) == "missed"
    assert targets.verdict(at_least, [24_000]) == "missed"
    # mean 1.81, sd 0.01: CI 1.81 +/- 0.0248, all below 1.85
    assert targets.verdict(at_most, [1.80, 1.81, 1.82]) == "met"
    # mean 1.83, sd 0.01: CI 1.83 +/- 0.0248 = [1.805, 1.855] spans 1.85
    assert targets.verdict(at_most, [1.82, 1.83, 1.84]) == "at the limit"
    # mean 1.88, sd 0.01: CI [1.855, 1.905], all above
    assert targets.verdict(at_most, [1.87, 1.88, 1.89]) == "missed"
    # n = 2: mean 1.80, sd 0.0141, CI +/- 0.18 spans 1.85 although both runs are under it
    assert targets.verdict(at_most, [1.79, 1.81]) == "at the limit"
    assert targets.verdict(at_least, [26_000, 26_100, 26_200]) == "met"
    reading = targets.Target("speed", ("x",), float, None, unit=" ms")  # context: judged against nothing
    assert targets.verdict(reading, [233.1]) == targets.verdict(reading, [200.0, 900.0]) == "context"
    with pytest.raises(ValueError, match="no limit"):
        reading.met_by(233.1)


def test_targets_table_reads_every_target_from_benchmark_shaped_output(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every CPU target finds its value in output shaped by the benchmarks themselves
    (``anytime_inference.report`` prints the inference lines), and the table judges each."""
    import contextlib
    import io

    targets, inference = _targets(), load_script("benchmarks/anytime_inference.py")
    all_stages = {"anytime_cifar_resnet20_w124": 1.05, "anytime_resnet50_w124": 1.12}  # wd models: 1.30

    def fake_run(tree: Path, command: list[str]) -> str:
        if command[0].endswith("train_step.py"):
            return _STEP_TABLE
        model = command[command.index("--model") + 1]
        batches = command[command.index("--batch") + 1 : command.index("--rounds")]
        stages = 5 if "_wd_" in model else 3
        medians = {"full": 1.0, "anytime": all_stages.get(model, 1.30), "recompute": 1.5}
        medians |= {f"active {k}": 1.0 + 0.1 * (k == 1) for k in range(1, stages + 1)}
        medians |= {f"dense {k}": 1.0 for k in range(1, stages + 1)}
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            for batch in batches:
                inference.report(model, int(command[command.index("--size") + 1]), int(batch), medians)
        return out.getvalue()

    monkeypatch.setattr(targets, "run_benchmark", fake_run)
    chosen = targets.cpu_targets(rounds=3)
    values = targets.measure(chosen, reps=1, progress=lambda line: None)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in targets.table(chosen, values).splitlines()[2:]}
    assert len(rows) == len(chosen) == 25
    expect = {
        "train step, ResNet-20 w124: sgd ms/step (this machine's speed)": ("233 ms", "context"),
        "train step, ResNet-20 w124: osgd / sgd": ("1.84x", "met"),
        "train step, ResNet-42 w124: normsgd / sgd": ("1.96x", "missed"),
        "train step, Sparse ResNet-26 d124: osgd / sgd": ("1.84x", "missed"),
        "train step, ResNet-20 w124: osgd peak memory / sgd": ("1.01x", "met"),
        "train step, ResNet-42 w124: osgd_norm / sgd": ("1.90x", "met"),
        "train step, ResNet-20 w124: sgd channels_last + compile / default": ("0.66x", "met"),
        "inference, ResNet-20 w124, batch 64: all stages / last stage": ("1.05x", "met"),
        "inference, ResNet-20 w124, batch 1: set_active_stage(1) / dense": ("1.10x", "met"),
        "inference, ResNet-20 w124, batch 1: set_active_stage(2) / dense": ("1.00x", "met"),
        "inference, Sparse ResNet-50 wd_alt, batch 1: all stages / last stage": ("1.30x", "missed"),
        "inference, ResNet-50 w124 224x224, batch 1: all stages / last stage": ("1.12x", "missed"),
    }
    for label, (value, verdict) in expect.items():
        assert f"| {value} |" in rows[label], rows[label]
        assert rows[label].endswith(f"| {verdict} |"), rows[label]
    monkeypatch.setattr(targets, "run_benchmark", lambda tree, command: "no table here")
    with pytest.raises(SystemExit, match="update its reader"):
        targets.measure(chosen[:1], reps=1, progress=lambda line: None)


@pytest.mark.parametrize(
    ("model", "passes"), [("anytime_cifar_resnet20_w124", "separate"), ("anytime_cifar_sparse_resnet26_d124", "single")]
)
def test_train_step_floor_takes_one_gradient_per_stage_and_never_steps(
    model: str, passes: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``floor``: osgd's stage passes, one ``autograd.grad`` per stage over every parameter, and
    neither ``.grad`` nor the weights change (no combination, no optimizer step)."""
    import argparse

    import torch
    from accelerate import Accelerator

    bench = load_script("benchmarks/train_step.py")
    args = argparse.Namespace(model=model, batch_size=2, image_size=32, stage_passes="auto")
    step, used = bench.build_step(bench.FLOOR, args, Accelerator(cpu=True), channels_last=False, compiled=False)
    assert used == passes
    calls = []
    real_grad = torch.autograd.grad

    def recording_grad(outputs, inputs, **kwargs):
        calls.append(inputs)
        return real_grad(outputs, inputs, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", recording_grad)
    torch.manual_seed(0)  # build_step seeds 0 before creating its model: the same initial weights
    reference = [p.detach().clone() for p in timm.create_model(model, num_classes=10).parameters()]
    step()
    assert len(calls) == 3  # one per stage
    params = calls[0]
    assert all(inputs is params for inputs in calls)
    assert len(params) == len(reference)  # every parameter
    assert all(p.grad is None for p in params)
    assert all(torch.equal(p, r) for p, r in zip(params, reference, strict=True))


def test_batched_stage_gradients_match_the_closed_form_and_separate_passes() -> None:
    """``floor_batched``'s one vectorized backward pass gives every stage's own gradient: against
    a closed form, and against one ``autograd.grad`` per stage of a depth-nested network (float64)."""
    import torch
    from torch.nn import functional as F

    bench = load_script("benchmarks/train_step.py")
    w = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    unused = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    a = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 4.0], [0.5, 0.5, 0.5]], dtype=torch.float64)
    losses = [(w * a[k]).sum() + k * (w**2).sum() for k in range(3)]  # d L_k / d w = a_k + 2 k w
    grad_w, grad_unused = bench.batched_stage_gradients(losses, [w, unused])
    expected = torch.stack([a[k] + 2 * k * w.detach() for k in range(3)])
    torch.testing.assert_close(grad_w, expected, rtol=0, atol=1e-12)
    assert grad_unused is None

    torch.manual_seed(0)
    model = timm.create_model("anytime_cifar_sparse_resnet26_d124", num_classes=10).double().train()
    x, y = torch.randn(2, 3, 32, 32, dtype=torch.float64), torch.tensor([1, 7])
    params = list(model.parameters())
    losses = [F.cross_entropy(z, y) for z in model.forward_stages(x)]
    separate = [torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True) for loss in losses]
    batched = bench.batched_stage_gradients(losses, params)
    for param_index, stacked in enumerate(batched):
        for stage, grads in enumerate(separate):
            reference = grads[param_index]
            if reference is None:  # stage k does not reach it: the batched pass gives zeros or None
                assert stacked is None or not stacked[stage].any()
            else:
                torch.testing.assert_close(stacked[stage], reference, rtol=1e-10, atol=1e-12)


def test_train_step_floor_batched_is_one_vectorized_pass_and_never_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    import torch
    from accelerate import Accelerator

    bench = load_script("benchmarks/train_step.py")
    model = "anytime_cifar_resnet20_w124"
    args = argparse.Namespace(model=model, batch_size=2, image_size=32, stage_passes="auto")
    step, used = bench.build_step(bench.FLOOR_BATCHED, args, Accelerator(cpu=True), channels_last=False, compiled=False)
    assert used == "single"
    calls = []
    real_grad = torch.autograd.grad

    def recording_grad(outputs, inputs, **kwargs):
        calls.append((outputs, inputs, kwargs))
        return real_grad(outputs, inputs, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", recording_grad)
    torch.manual_seed(0)
    reference = [p.detach().clone() for p in timm.create_model(model, num_classes=10).parameters()]
    step()
    assert len(calls) == 1
    outputs, params, kwargs = calls[0]
    assert outputs.shape == (3,)  # the three stage losses, in one pass
    assert kwargs["is_grads_batched"]
    assert torch.equal(kwargs["grad_outputs"], torch.eye(3))
    assert len(params) == len(reference)  # every parameter
    assert all(p.grad is None for p in params)
    assert all(torch.equal(p, r) for p, r in zip(params, reference, strict=True))
    with pytest.raises(SystemExit, match="eager only"):
        bench.build_step(bench.FLOOR_BATCHED, args, Accelerator(cpu=True), channels_last=False, compiled=True)


@needs_cifar10
def test_early_exit_example_prints_what_docs_early_exit_records(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/evaluation.md quotes docs/early_exit/early_exit.txt: the example must still print it for
    the width-nested checkpoint (thresholds, budget curve, paired counts and p), apart from the
    machine-dependent latencies."""
    machine_dependent = ("stage latencies", "predict_within", "plot:")
    block = (ROOT / "docs" / "early_exit" / "early_exit.txt").read_text().split("\n$ ")[1]  # after the header
    assert block.startswith("python examples/early_exit.py --model anytime_cifar_resnet20_w124.osgd_cifar10_e100")
    recorded = block.splitlines()[1:]
    example = load_script("examples/early_exit.py")
    monkeypatch.setattr(sys, "argv", ["early_exit.py", "--model", "anytime_cifar_resnet20_w124.osgd_cifar10_e100"])
    example.main()
    printed = capsys.readouterr().out.splitlines()

    def kept(lines: list[str]) -> list[str]:
        return [line.rstrip() for line in lines if line.strip() and not line.startswith(machine_dependent)]

    assert kept(printed) == kept(recorded)
    assert "exact McNemar p = 3.1e-08" in "\n".join(printed)


def test_anytime_inference_compiles_each_mode_asked_for_with_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--compile --cpp-wrapper`` (no ``--freeze``): the last stage and all stages compiled with no
    options, then with ``cpp_wrapper``; no frozen variant, and the report prints both modes asked for."""
    import contextlib
    import io

    import torch

    inference = load_script("benchmarks/anytime_inference.py")
    compiled_with: list[dict[str, bool]] = []

    def fake_compile(fn: object, options: dict[str, bool]) -> object:
        compiled_with.append(options)
        return fn  # run eagerly: this test checks what is asked of inductor, not inductor

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = timm.create_model("anytime_cifar_resnet20_w124").eval()
    runs = inference.variants(model, torch.randn(1, 3, 32, 32), compile=True, cpp_wrapper=True)
    assert compiled_with == [{}, {}, {"cpp_wrapper": True}, {"cpp_wrapper": True}]
    compiled = {name for name in runs if name.split()[-1] in ("compiled", "frozen", "cpp")}
    assert compiled == {"full compiled", "anytime compiled", "full cpp", "anytime cpp"}
    with torch.inference_mode():
        medians = inference._time(runs, rounds=1, warmup=0)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        inference.report("anytime_cifar_resnet20_w124", 32, 1, medians)
    printed = out.getvalue()
    assert "anytime compiled, one graph" in printed
    assert "anytime cpp, one graph" in printed
    assert "frozen" not in printed
