"""Deploying one stage: ``torch.export`` (batch dimension dynamic) and TorchScript of an anytime model
after ``set_active_stage(k)`` compute D_k alone, on every family. The reference is the eager model
at that stage, on a batch size the program was not traced with, and its FLOPs
(``torch.utils.flop_counter``): the program must not fall back to the whole network, nor keep the
stage the model had before. ``extract_stage(k)`` exports with D_k's parameters only.

timm's own suite (``tests/timm_suite``) scripts and FX-traces every model at its default stage, the
last; it has no ``torch.export`` test and never changes the stage."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import Tensor, nn
from torch.export import Dim, export
from torch.utils.flop_counter import FlopCounterMode

import timm_anytime  # noqa: F401  (registers the models)
from tests.timm_anytime.batchnorm import nontrivial_batchnorm
from tests.timm_anytime.families import ANYTIME_FAMILIES
from timm_anytime.cost import stage_costs

pytestmark = pytest.mark.slow  # a few seconds per family: tracing, not arithmetic

BATCH = ({0: Dim("batch", max=4096)},)  # one dynamic dimension for the single input


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return nontrivial_batchnorm(timm.create_model(name, num_classes=10))


def _images(n: int, size: int) -> Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(n))


def _flops(module: nn.Module, x: Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(x)
    return counter.get_total_flops()


@pytest.mark.parametrize(("name", "size"), ANYTIME_FAMILIES)
def test_export_computes_the_active_stage_alone_at_its_cost(name: str, size: int) -> None:
    model = _model(name)
    traced_on, run_on = _images(2, size), _images(3, size)
    outputs, flops, programs = {}, {}, {}
    for stage in (1, model.num_stages):
        model.set_active_stage(stage)
        programs[stage] = program = export(model, (traced_on,), dynamic_shapes=BATCH).module()
        with torch.no_grad():
            outputs[stage] = program(run_on)
            torch.testing.assert_close(outputs[stage], model(run_on), rtol=1e-5, atol=1e-5)
        flops[stage] = _flops(program, run_on)
        assert flops[stage] == _flops(model, run_on), (name, stage)
    assert not torch.allclose(outputs[1], outputs[model.num_stages], atol=1e-3)
    assert flops[1] < flops[model.num_stages]
    with torch.no_grad():  # the model has moved on to the last stage; stage 1's program has not
        torch.testing.assert_close(programs[1](run_on), outputs[1], rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")  # torch 2.14 warns
@pytest.mark.parametrize(("name", "size"), ANYTIME_FAMILIES)
def test_torchscript_keeps_the_stage_it_was_scripted_at(name: str, size: int) -> None:
    model = _model(name)
    x = _images(3, size)
    model.set_active_stage(1)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        first = model(x)
        model.set_active_stage(model.num_stages)  # the eager model moves on; the script does not
        last = model(x)
        got = scripted(x)
    torch.testing.assert_close(got, first, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, last, atol=1e-3)


# one family per extract_stage implementation (e1234 and wd_sim share theirs with w124 and wd_alt);
# the cascade has none: its stage k is the network up to exit k, which extract_stage refuses
EXTRACTABLE = [f for f in ANYTIME_FAMILIES if f[0].split("_")[-1] in ("w124", "d124", "alt")]


@pytest.mark.parametrize(("name", "size"), EXTRACTABLE)
def test_an_extracted_stage_exports_with_its_own_parameters_only(name: str, size: int) -> None:
    model = _model(name)
    costs = stage_costs(model, (3, size, size))
    traced_on, run_on = _images(2, size), _images(3, size)
    program = export(model.extract_stage(1).eval(), (traced_on,), dynamic_shapes=BATCH).module()
    model.set_active_stage(1)
    with torch.no_grad():
        torch.testing.assert_close(program(run_on), model(run_on), rtol=1e-5, atol=1e-5)
    params = sum(p.numel() for p in program.parameters())
    assert params == costs[0].params < sum(p.numel() for p in model.parameters())
