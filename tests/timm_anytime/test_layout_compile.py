"""channels_last, torch.compile and gradient checkpointing change speed or memory, not results: the same
outputs and weights as the default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from torch import nn
from torch.nn import functional as F
from torch.torch_version import TorchVersion

import timm_anytime  # noqa: F401
from tests.timm_anytime.runs import tiny_config
from timm_anytime.train import train
from timm_anytime.train.stage_passes import (
    KEPT_GRAPH_COMPILE_MIN_TORCH,
    KEPT_GRAPH_COMPILE_OPTIONS,
    check_compile_support,
    compile_options,
    compiled_backward_settings,
)

MODELS = ["anytime_cifar_resnet20_w124", "anytime_cifar_sparse_resnet26_d124", "anytime_cifar_sparse_resnet50_wd_sim"]
#: What inductor compiles in the compile tests: ResNet-20 w124 with one block per stage instead of three
#: (ResNet-8), the same nesting and the same kinds of blocks and shortcuts. Inductor's time grows with
#: the blocks: the per-stage trainer test (one epoch, eager and compiled, both pass kinds) took 175 s
#: with ResNet-20 and 92 s with this, alone on 2 cores.
SHALLOW = {"width": 0.5, "layers": [1, 1, 1]}


@pytest.mark.parametrize("name", MODELS)
def test_channels_last_gives_the_same_outputs_and_gradients(name: str) -> None:
    """In float64, so that the comparison tests this code's layout handling (stripe buffers, masks,
    slicing), not float32 rounding: at initialization the deep Sparse ResNets amplify rounding, and
    their float32 gradients differ from float64 by percents in either layout, by different amounts
    with the number of threads."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10, width=0.5).train().double()
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    y = torch.randint(0, 10, (4,))
    reference = model.forward_stages(x)
    grads = torch.autograd.grad(sum(F.cross_entropy(z, y) for z in reference), list(model.parameters()))
    model.to(memory_format=torch.channels_last)
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x_last = x.contiguous(memory_format=torch.channels_last)
    outputs = model.forward_stages(x_last)
    grads_last = torch.autograd.grad(sum(F.cross_entropy(z, y) for z in outputs), list(model.parameters()))
    for want, have in zip(reference, outputs, strict=True):
        torch.testing.assert_close(have, want, rtol=1e-9, atol=1e-12)
    for want, have in zip(grads, grads_last, strict=True):
        torch.testing.assert_close(have, want, rtol=1e-9, atol=1e-12)
    model.eval()
    with torch.no_grad():
        anytime = list(model.forward_anytime(x_last))
    for k, logits in enumerate(anytime, start=1):
        model.set_active_stage(k)
        with torch.no_grad():
            torch.testing.assert_close(logits, model(x), rtol=1e-9, atol=1e-12)


def _losses(run: Path) -> list[list[float]]:
    return [json.loads(line)["train_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_compiled_forward_gives_the_eager_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    model = timm.create_model("anytime_cifar_resnet20_w124", num_classes=10, in_chans=1, **SHALLOW).train()
    compiled = torch.compile(model.forward_stages)
    params = list(model.parameters())
    for _ in range(2):  # the second step runs on updated weights (the graph must not bake them in)
        x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
        fast = compiled(x)  # each forward with its own backward: both update the BatchNorm buffers
        grads_fast = torch.autograd.grad(sum(F.cross_entropy(z, y) for z in fast), params)
        eager = model.forward_stages(x)
        grads = torch.autograd.grad(sum(F.cross_entropy(z, y) for z in eager), params)
        for want, have in zip(eager, fast, strict=True):
            torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-5)
        for want, have in zip(grads, grads_fast, strict=True):
            torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-5)
        with torch.no_grad():
            for param, grad in zip(params, grads, strict=True):
                param.sub_(0.1 * grad)


@pytest.mark.slow
def test_trainer_runs_with_channels_last_and_compile(tmp_path: Path) -> None:
    cfg = dict(method="sgd", epochs=1, model_kwargs=SHALLOW)
    plain = _losses(train(tiny_config(tmp_path / "plain", **cfg)))
    fast = _losses(train(tiny_config(tmp_path / "fast", **cfg, channels_last=True, compile=True)))
    # Not bitwise: the compiled run drifts from the eager one by about 2e-3 in four steps, as timm's own
    # resnet10t does under torch.compile with this torch (docs/training.md).
    torch.testing.assert_close(torch.tensor(fast), torch.tensor(plain), rtol=0, atol=1e-2)


def test_compiled_backward_settings_apply_only_where_graphs_are_kept() -> None:
    config = torch._functorch.config
    before = config.enable_autograd_cache
    with compiled_backward_settings(True, "osgd", "single"):
        assert config.enable_autograd_cache is False
    assert config.enable_autograd_cache == before
    for compiled, method, passes in ((False, "osgd", "single"), (True, "sgd", "single"), (True, "osgd", "separate")):
        with compiled_backward_settings(compiled, method, passes):
            assert config.enable_autograd_cache == before


@pytest.mark.parametrize("method", ["normsgd", "osgd", "osgd_norm"])
def test_compile_options_make_a_compile_of_their_own_only_for_kept_graphs(method: str) -> None:
    assert compile_options(method, "single") == {"fx_graph_cache": False}
    assert compile_options(method, "separate") is None  # each stage's graph is freed by its one backward
    for freed_after_one_backward in ("sgd", "adaloss", "greedy"):
        assert compile_options(freed_after_one_backward, "single") is None


class _TwoHeads(nn.Module):
    """Two stage-like outputs of one channels_last conv body: compiles in seconds, and shows the failure."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        conv_bn = [nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()]
        self.body = nn.Sequential(*conv_bn, nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.heads = nn.ModuleList([nn.Linear(4, 2), nn.Linear(8, 2)])
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.body(x)
        return [self.heads[0](h[:, :4].mean((2, 3))), self.heads[1](h.mean((2, 3)))]


@pytest.mark.slow
def test_compiled_graph_kept_between_backward_passes_gives_the_eager_gradients() -> None:
    """A compiled model's backward pass first compiled for one use (an sgd step), then a second
    instance whose graph is kept between per-stage backward passes (osgd's single pass), compiled
    as the trainer compiles it. Compiled without the options, torch raised "non-empty donated
    buffers" at the second backward pass, and with donated buffers turned off it returned wrong
    gradients for the second loss instead (four of the ten tensors it reaches)."""
    torch.manual_seed(1)
    x = torch.randn(4, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (4,))
    first = torch.compile(_TwoHeads())
    sum(F.cross_entropy(z, y) for z in first(x)).backward()  # graph freed: compiled for one use
    model = _TwoHeads()
    compiled, params = torch.compile(model, options=KEPT_GRAPH_COMPILE_OPTIONS), list(model.parameters())
    with compiled_backward_settings(True, "osgd", "single"):
        losses = [F.cross_entropy(z, y) for z in compiled(x)]
        grads = [
            torch.autograd.grad(loss, params, retain_graph=k == 0, allow_unused=True) for k, loss in enumerate(losses)
        ]
    model64 = _TwoHeads().double()  # the reference: eager, float64, same initial weights
    losses = [F.cross_entropy(z, y) for z in model64(x.double())]
    for k, loss in enumerate(losses):
        want = torch.autograd.grad(loss, list(model64.parameters()), retain_graph=k == 0, allow_unused=True)
        for have_g, want_g in zip(grads[k], want, strict=True):
            if want_g is None:  # head 2 for loss 1 and head 1 for loss 2: outside that loss's graph
                assert have_g is None or not have_g.any()
            else:
                torch.testing.assert_close(have_g.double(), want_g, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("passes", ["single", "separate"])  # two tests: test workers take one each
def test_trainer_compiles_the_per_stage_methods(tmp_path: Path, passes: str) -> None:
    """osgd with the single pass (graphs kept between the stages' backward passes) and with the
    separate passes, compiled, follows the eager run (the single pass where torch compiles it)."""
    if passes == "single" and torch.__version__ < KEPT_GRAPH_COMPILE_MIN_TORCH:
        pytest.skip(f"torch {torch.__version__} cannot compile a kept graph (the trainer refuses it)")
    cfg = dict(method="osgd", epochs=1, stage_passes=passes, model_kwargs=SHALLOW)
    plain = _losses(train(tiny_config(tmp_path / "plain", **cfg)))
    fast = _losses(train(tiny_config(tmp_path / "fast", **cfg, channels_last=True, compile=True)))
    torch.testing.assert_close(torch.tensor(fast), torch.tensor(plain), rtol=0, atol=1e-2)


def test_compiling_a_kept_graph_is_refused_on_an_older_torch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """torch 2.6 stops in the second stage's backward pass of a compiled single pass: the trainer
    refuses before it writes the run folder, and lets the separate passes and sgd through."""
    monkeypatch.setattr(torch, "__version__", TorchVersion("2.6.0"))
    out = tmp_path / "run"
    with pytest.raises(
        ValueError, match=r"needs torch 2\.8 or later \(this is torch 2\.6\.0\)\. Use --stage-passes separate"
    ):
        train(tiny_config(out, method="osgd", stage_passes="single", compile=True, epochs=1))
    assert not (out / "config.yaml").exists()
    check_compile_support("osgd", "separate")
    check_compile_support("sgd", "single")
    monkeypatch.setattr(torch, "__version__", TorchVersion("2.7.1"))  # the last release below the floor
    with pytest.raises(ValueError, match=r"this is torch 2\.7\.1"):
        check_compile_support("normsgd", "single")
    for newer in ("2.8.0", "2.10.0"):  # the floor passes; 2.10 is newer, though not as a string
        monkeypatch.setattr(torch, "__version__", TorchVersion(newer))
        check_compile_support("osgd", "single")


def test_a_compiled_model_follows_set_active_stage() -> None:
    """``set_active_stage`` writes the layers' stage into their instance dicts, bypassing
    ``nn.Module.__setattr__``: torch.compile's guards must still see every switch. Guards are
    dynamo's, whatever the backend: aot_eager skips inductor's C++ builds (a minute, cold, on 2 cores)."""
    torch.manual_seed(0)
    model = timm.create_model("anytime_cifar_resnet20_w124", num_classes=10, in_chans=1, width=0.5).eval()
    compiled = torch.compile(model, backend="aot_eager")
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        reference = model.forward_stages(x)
        for stage in (3, 1, 2, 1):
            model.set_active_stage(stage)
            torch.testing.assert_close(compiled(x), reference[stage - 1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["osgd", "sgd"])
def test_trainer_grad_checkpointing_recomputes_and_ends_with_the_same_weights(
    tmp_path: Path, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--grad-checkpointing: the blocks' forward runs again in the backward pass (counted through
    torch's checkpoint), and two epochs end with the state of the run that stored every activation:
    the parameters (the recomputation repeats the same float operations, dropout's mask included)
    and BatchNorm's running statistics and batch counts, which the reruns (one per backward pass:
    three a step for osgd's single pass) leave alone. Plain torch checkpointing, as timm's
    checkpoint_seq does it, would count every batch 2 or 4 times."""
    calls = []
    original = torch.utils.checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    # the single pass on both sides: --grad-checkpointing picks it (the separate passes cannot be recomputed)
    settings = dict(method=method, model_kwargs={"width": 0.5, "drop_rate": 0.3}, stage_passes="single")
    stored = train(tiny_config(tmp_path / "stored", **settings))
    assert not calls
    recomputed = train(tiny_config(tmp_path / "recomputed", grad_checkpointing=True, **settings))
    assert calls  # the checkpointed path ran
    expected, got = _weights(stored), _weights(recomputed)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "model.safetensors"))


def test_a_compiled_model_with_grad_checkpointing_gives_the_eager_gradients() -> None:
    """Under torch.compile (which takes no checkpoint context_fn in torch 2.14) the blocks fall back
    to plain checkpointing; the gradients are still the eager ones. The trainer refuses the pair.
    The fallback happens in dynamo and AOTAutograd, so aot_eager tests it without inductor's C++
    builds; inductor itself runs in the trainer tests above."""
    torch.manual_seed(0)
    model = timm.create_model("cifar_resnet20", width=0.25).train()
    x = torch.randn(4, 3, 16, 16)
    model(x).sum().backward()
    eager = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    torch.compile(model, backend="aot_eager")(x).sum().backward()
    for name, grad in eager.items():
        torch.testing.assert_close(model.get_parameter(name).grad, grad, rtol=1e-3, atol=1e-4, msg=name)
    with pytest.raises(ValueError, match="grad_checkpointing and compile"):
        tiny_config(Path("unused"), grad_checkpointing=True, compile=True)
