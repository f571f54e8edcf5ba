"""Anytime inference: forward_anytime continuing with a subset of the batch, early exit under a
budget (against plain loops and FLOP counts), predict_within against a fake clock."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

import timm_anytime  # noqa: F401
from tests.timm_anytime.families import ANYTIME_FAMILIES
from tests.timm_anytime.runs import tiny_config
from timm_anytime.cli.evaluate import main as evaluate_main
from timm_anytime.cost import stage_costs
from timm_anytime.cpu_allocator import apply_cpu_allocator
from timm_anytime.inference import EarlyExit, budget_curve, calibrate_thresholds, exit_stages, predict_within
from timm_anytime.inference.early_exit import SCORES, expected_cost, stage_scores
from timm_anytime.inference.realtime import measure_stage_seconds
from timm_anytime.report import write_report
from timm_anytime.run_evaluation import evaluate_run
from timm_anytime.train import train


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10).double().eval()
    for module in model.modules():  # non-trivial BatchNorm statistics, so that rows really differ
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize(("name", "size"), ANYTIME_FAMILIES)
@torch.no_grad()
def test_forward_anytime_continues_with_the_rows_sent(name: str, size: int) -> None:
    """After ``send(rows)``, every later stage equals D_k run alone on just those inputs (the dense
    ``set_active_stage`` path, which shares no code with the incremental one)."""
    model = _model(name)
    x = torch.randn(7, 3, size, size, dtype=torch.float64)
    run = model.forward_anytime(x)
    first = next(run)
    assert torch.allclose(first, model.set_active_stage(1)(x), atol=1e-10)
    alive = torch.arange(7)
    for stage in range(2, model.num_stages + 1):
        keep = torch.tensor([i for i in range(len(alive)) if (i + stage) % 3 != 0] or [0])
        alive = alive[keep]
        logits = run.send(keep)
        expected = model.set_active_stage(stage)(x[alive])
        assert logits.shape == expected.shape
        assert torch.allclose(logits, expected, atol=1e-10), f"stage {stage}"
    with pytest.raises(StopIteration):
        next(run)


def test_exit_stages_is_the_first_confident_stage() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(4, 300, generator=generator, dtype=torch.float64)
    thresholds = [0.8, math.inf, 0.3]
    stages = exit_stages(scores, thresholds)
    for i in range(300):  # plain loop reference
        expected = next((k + 1 for k in range(3) if scores[k, i] >= thresholds[k]), 4)
        assert int(stages[i]) == expected
    with pytest.raises(ValueError, match="3 thresholds"):
        exit_stages(scores, [0.5])


def test_calibrated_cost_meets_the_budget_closely_from_below() -> None:
    generator = torch.Generator().manual_seed(1)
    scores = torch.rand(3, 4000, generator=generator, dtype=torch.float64)
    costs = [0.1, 0.3, 1.0]
    for budget in (0.1, 0.15, 0.3, 0.5, 0.77, 1.0):
        thresholds = calibrate_thresholds(scores, costs, budget)
        cost = expected_cost(scores, thresholds, costs)
        assert cost <= budget + 1e-12
        assert cost >= budget - 0.01, (budget, cost)  # 4000 inputs: steps of at most 0.9 / 4000
    assert exit_stages(scores, calibrate_thresholds(scores, costs, 0.1)).eq(1).all()
    assert exit_stages(scores, calibrate_thresholds(scores, costs, 1.0)).eq(3).all()
    for bad in (0.05, 1.2):
        with pytest.raises(ValueError, match="outside"):
            calibrate_thresholds(scores, costs, bad)


def test_the_most_confident_inputs_exit_first() -> None:
    """At a budget between stage 1 and 2 with two stages, exactly the inputs with the highest stage-1
    confidence leave at stage 1."""
    scores = torch.tensor([[0.9, 0.2, 0.6, 0.4, 0.8], [0.0] * 5], dtype=torch.float64)
    thresholds = calibrate_thresholds(scores, [0.5, 1.0], 0.8)  # cost 0.5a + (1 - a) <= 0.8: a >= 0.4
    assert exit_stages(scores, thresholds).tolist() == [1, 2, 2, 2, 1]


def _data(count: int, size: int = 32) -> list[tuple[Tensor, Tensor]]:
    torch.manual_seed(3)
    x, y = torch.randn(count, 3, size, size, dtype=torch.float64), torch.randint(0, 10, (count,))
    return [(x[i : i + 50], y[i : i + 50]) for i in range(0, count, 50)]


@pytest.mark.parametrize("name", ["anytime_cifar_resnet20_w124", "anytime_cifar_sparse_resnet26_d124"])
def test_early_exit_runs_each_input_to_its_stage_and_no_further(name: str) -> None:
    model = _model(name)
    calibration, test = _data(200), _data(100)[0][0]
    ee = EarlyExit.calibrate(model, calibration, budget=0.45)
    assert abs(ee.expected_cost - 0.45) < 0.02
    assert len(ee.thresholds) == 2
    with torch.no_grad():
        full = model.forward_stages(test)  # every stage on every input: the reference
    scores = torch.stack([SCORES["max_softmax"](z) for z in full])
    expected_stages = exit_stages(scores.double(), ee.thresholds)
    assert len(set(expected_stages.tolist())) > 1  # the test exercises exits at several stages
    with FlopCounterMode(display=False) as counter:
        logits, stages = ee(test)
    assert torch.equal(stages, expected_stages)
    for i, stage in enumerate(stages.tolist()):
        assert torch.allclose(logits[i], full[stage - 1][i], atol=1e-10)
    # The inputs that left stopped computing: total FLOPs are each input's cost through its stage.
    anytime = [c.anytime_flops for c in stage_costs(model, (3, 32, 32))]
    assert counter.get_total_flops() == sum(anytime[s - 1] for s in stages.tolist())
    assert ee.cost_of(stages) == pytest.approx(sum(anytime[s - 1] for s in stages.tolist()) / len(test) / anytime[-1])


def test_early_exit_when_every_input_leaves_at_stage_one() -> None:
    model = _model("anytime_cifar_resnet20_w124")
    ee = EarlyExit(model, [-math.inf, -math.inf], [0.1, 0.3, 1.0])
    logits, stages = ee(_data(10)[0][0])
    assert stages.eq(1).all()
    assert logits.shape == (10, 10)


def test_confidence_scores_match_their_closed_forms() -> None:
    p = torch.tensor([[0.5, 0.3, 0.2], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64)
    logits = p.log() + 7.0  # softmax ignores a shift
    entropy = -(p * p.log()).sum(1)
    expected = {"max_softmax": [0.5, 1 / 3], "margin": [0.2, 0.0], "neg_entropy": (-entropy).tolist()}
    for name, values in expected.items():
        torch.testing.assert_close(SCORES[name](logits).double(), torch.tensor(values, dtype=torch.float64))
    certain = torch.tensor([[40.0, 0.0, 0.0]])  # one-hot to float32 precision
    assert float(SCORES["margin"](certain)) == pytest.approx(1.0)
    assert float(SCORES["neg_entropy"](certain)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("score", ["margin", "neg_entropy"])
def test_early_exit_decides_with_the_chosen_score(score: str) -> None:
    model = _model("anytime_cifar_resnet20_w124")
    x = _data(40)[0][0]
    with torch.no_grad():
        stage_logits = model.forward_stages(x)
    probs = [logits.softmax(-1) for logits in stage_logits]
    if score == "margin":  # computed here, not by the library
        confidence = [top.topk(2, -1).values[:, 0] - top.topk(2, -1).values[:, 1] for top in probs]
    else:
        confidence = [(q * q.log()).sum(-1) for q in probs]
    # about half exit at each early stage; midway between two scores, so float32 rounding cannot flip one
    thresholds = [float(c.sort().values[len(x) // 2 - 1 : len(x) // 2 + 1].mean()) for c in confidence[:-1]]
    expected = torch.full((len(x),), 3)
    for k in (1, 0):
        expected[confidence[k] >= thresholds[k]] = k + 1
    logits, stages = EarlyExit(model, thresholds, [0.1, 0.3, 1.0], score=score)(x)
    assert 0 < int((stages == 1).sum()) < len(x)
    assert (stages == 2).any()
    torch.testing.assert_close(stages, expected)
    for i, stage in enumerate(stages.tolist()):
        torch.testing.assert_close(logits[i], stage_logits[stage - 1][i])


def test_early_exit_errors_name_the_problem() -> None:
    model = _model("anytime_cifar_resnet20_w124")
    with pytest.raises(TypeError, match="no stages"):
        EarlyExit.calibrate(timm.create_model("cifar_resnet20"), _data(50), 0.5)
    with pytest.raises(ValueError, match="no batches"):
        EarlyExit.calibrate(model, [], 0.5)
    with pytest.raises(ValueError, match="outside"):
        EarlyExit.calibrate(model, _data(50), 0.01)
    with pytest.raises(ValueError, match="unknown confidence score"):
        EarlyExit.calibrate(model, _data(50), 0.5, score="vibes")
    with pytest.raises(TypeError, match="no stages"):
        EarlyExit(timm.create_model("cifar_resnet20"), [], [1.0])


def test_stage_costs_errors_name_the_fix() -> None:
    with pytest.raises(TypeError, match="model_costs counts any other network"):
        stage_costs(timm.create_model("cifar_resnet20"))
    model = _model("anytime_cifar_resnet20_w124")
    del model.pretrained_cfg["input_size"]
    with pytest.raises(ValueError, match=r"pass input_size, e\.g\. \(3, 32, 32\)"):
        stage_costs(model)
    assert len(stage_costs(model, (3, 32, 32))) == model.num_stages


def test_budget_curve_equals_running_early_exit() -> None:
    model = _model("anytime_cifar_sparse_resnet26_d124")
    calibration, test = _data(150), _data(100)
    scores, correct, size = stage_scores(model, test, SCORES["max_softmax"])
    cal_scores, _, _ = stage_scores(model, calibration, SCORES["max_softmax"])
    costs = [c.anytime_flops / stage_costs(model, size)[-1].anytime_flops for c in stage_costs(model, size)]
    (point,) = budget_curve(cal_scores, scores, correct, costs, [0.6])
    ee = EarlyExit.calibrate(model, calibration, 0.6)
    assert point["thresholds"] == ee.thresholds
    images, labels = torch.cat([b[0] for b in test]), torch.cat([b[1] for b in test])
    logits, stages = ee(images)
    assert point["test_cost"] == pytest.approx(ee.cost_of(stages))
    wrong = (logits.argmax(1) != labels).double().mean()
    assert point["test_top1_err"] == pytest.approx(100 * float(wrong), abs=1e-3)
    assert sum(point["exit_fractions"]) == pytest.approx(1.0)


class FakeClockModel(nn.Module):
    """An anytime model whose stages take set times on a fake clock (deterministic tests); it has the
    members of the AnytimeModel protocol."""

    def __init__(self, durations: list[float]) -> None:
        super().__init__()
        self.num_stages, self.durations, self.now = len(durations), durations, 0.0

    def clock(self) -> float:
        return self.now

    def forward_anytime(self, x: Tensor) -> Iterator[Tensor]:
        for k, duration in enumerate(self.durations, start=1):
            self.now += duration
            yield torch.full((len(x), 2), float(k))

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        return list(self.forward_anytime(x))

    def set_active_stage(self, stage: int) -> nn.Module:
        return self

    def extract_stage(self, stage: int) -> nn.Module:
        raise NotImplementedError

    def stage_masks(self, stage: int) -> dict:
        return {}

    def osgd_reach_masks(self) -> list:
        return []


def test_predict_within_stops_before_a_stage_that_cannot_finish() -> None:
    model = FakeClockModel([1.0, 2.0, 3.0])
    logits, stage = predict_within(model, torch.zeros(1), 3.5, stage_seconds=[1.0, 2.0, 3.0], clock=model.clock)
    assert stage == 2
    assert logits is not None
    assert float(logits[0, 0]) == 2.0
    assert model.now == 3.0  # stage 3 never started
    model.now = 0.0
    assert predict_within(model, torch.zeros(1), 0.5, stage_seconds=[1.0, 2.0, 3.0], clock=model.clock) == (None, 0)
    model.now = 0.0
    assert predict_within(model, torch.zeros(1), 6.0, stage_seconds=[1.0, 2.0, 3.0], clock=model.clock)[1] == 3


def test_predict_within_is_late_by_at_most_one_stage_and_never_empty_when_stage_one_fits() -> None:
    rng = random.Random(0)
    for _ in range(500):
        measured = [rng.uniform(0.5, 3.0) for _ in range(rng.randint(1, 5))]
        actual = [m * rng.uniform(0.7, 1.6) for m in measured]  # stages run faster or slower than measured
        model = FakeClockModel(actual)
        deadline = rng.uniform(0.1, 1.2 * sum(measured))
        logits, stage = predict_within(model, torch.zeros(1), deadline, stage_seconds=measured, clock=model.clock)
        assert model.now <= deadline + max(actual)
        if measured[0] <= deadline:
            assert stage >= 1
            assert logits is not None
        else:
            assert (logits, stage) == (None, 0)
        if stage < len(measured) and stage > 0:  # it stopped because the next stage would not fit
            assert model.now + measured[stage] > deadline


def test_predict_within_on_a_real_model_measures_latencies_itself() -> None:
    model = _model("anytime_cifar_resnet20_w124").float().train()  # left in training mode by a user
    x = torch.randn(1, 3, 32, 32)
    latencies = measure_stage_seconds(model, x, repeats=3)
    assert len(latencies) == 3
    assert all(t > 0 for t in latencies)
    model.train()
    logits, stage = predict_within(model, x, seconds=60.0)
    assert stage == 3
    assert not model.training  # inference: BatchNorm's running statistics, as the docstring says
    with torch.no_grad():
        assert torch.allclose(logits, model.forward_stages(x)[-1], atol=1e-5)
    with pytest.raises(ValueError, match="positive"):
        predict_within(model, x, seconds=0)
    with pytest.raises(TypeError, match="no stages"):
        predict_within(timm.create_model("cifar_resnet20"), x, seconds=1.0)


def test_anytime_eval_early_exit_writes_the_curve_and_the_report_plots_it(tmp_path: Path) -> None:
    run = train(tiny_config(tmp_path / "run", train_per_class=30, epochs=1))  # digits: 100 more per class held out
    result = evaluate_run(
        run, latency_inputs=2, device="cpu", progress=False, early_exit=True, calibration_per_class=20
    )
    info = json.loads((run / "eval.json").read_text())["early_exit"]
    assert info == json.loads(json.dumps(result["early_exit"]))
    # the latencies were timed under anytime-train's allocator setting (process-wide, so this reads it back)
    assert result["cpu_allocator"] == apply_cpu_allocator("tuned")
    with pytest.raises(ValueError, match="cpu_allocator must be one of tuned, system"):
        evaluate_run(run, device="cpu", progress=False, cpu_allocator="jemalloc", output=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    assert info["calibration"] == {"split": "train", "after_first_per_class": 30, "images_per_class": 20, "inputs": 200}
    budgets = [p["budget"] for p in info["points"]]
    assert budgets == sorted(budgets)
    assert budgets[-1] == 1.0
    assert len(budgets) >= 12
    last = info["points"][-1]
    assert last["test_top1_err"] == pytest.approx(result["stages"][-1]["top1_err"])  # budget 1: the last stage
    first = info["points"][0]
    assert first["exit_fractions"][0] == 1.0
    assert first["test_top1_err"] == pytest.approx(result["stages"][0]["top1_err"])
    flags = ["--early-exit", "--budgets", "0.5", "1", "--calibration-per-class=20", "--latency-inputs=2"]
    code = evaluate_main([str(run), *flags, "--device=cpu", "--no-progress", "--output", str(tmp_path / "cli")])
    assert code == 0
    cli = json.loads((tmp_path / "cli" / "eval.json").read_text())["early_exit"]
    assert [p["budget"] for p in cli["points"]] == [0.5, 1.0]
    assert cli["points"][0]["test_cost"] <= 0.6  # 80 test digits: the cost tracks the budget loosely
    assert evaluate_main([str(run), "--early-exit", "--budgets", "2", "--no-progress", "--output", str(tmp_path)]) != 0
    assert not (tmp_path / "eval.json").exists()  # refused before anything was written
    report = write_report([run], tmp_path / "report")
    assert (tmp_path / "report" / "early_exit.png").is_file()
    assert "Early exit under a compute budget" in report.read_text()


def test_anytime_eval_early_exit_refuses_a_run_without_held_out_data(tmp_path: Path) -> None:
    run = train(tiny_config(tmp_path / "run", train_per_class=None, epochs=1))
    before = (run / "config.yaml").read_text()
    with pytest.raises(ValueError, match="none is held out"):
        evaluate_run(run, latency_inputs=2, device="cpu", progress=False, early_exit=True)
    assert (run / "config.yaml").read_text() == before
