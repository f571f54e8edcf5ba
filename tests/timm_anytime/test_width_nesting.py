"""Width-nested ResNets: the nesting invariant, the four ways to run a stage, FLOPs, errors."""

from __future__ import annotations

from fractions import Fraction

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models.resnet import ResNet
from torch.utils.flop_counter import FlopCounterMode

import timm_anytime  # noqa: F401  (registers the models)
from tests.timm_anytime.batchnorm import nontrivial_batchnorm
from timm_anytime import StripeSpec
from timm_anytime.cost import StageCost, format_costs, stage_costs
from timm_anytime.models.cifar_resnet import CifarResNet

# Small members of every family and nesting keep the suite fast; the shapes are what matter.
CASES = [
    ("anytime_cifar_resnet20_w124", {}, 32),
    ("anytime_cifar_resnet20_e1234", {}, 32),
    ("anytime_resnet18_w124", {"width": 0.25}, 64),
    ("anytime_resnet50_e1234", {"width": 0.25}, 64),
]


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial weights and BN statistics (timm zero-inits the last BN of every branch, which
    would make every residual branch vanish and the comparisons below vacuous)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=gen) + 0.5)
            elif name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=gen) * 0.1)
        for name, param in model.named_parameters():
            if param.dim() == 1:
                base = 1.0 if name.endswith("weight") and ".bn" in f".{name}" else 0.0
                param.copy_(base + 0.3 * torch.randn(param.shape, generator=gen))
            else:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=gen) * (1.0 / fan_in) ** 0.5)
        for module in model.modules():
            if hasattr(module, "weight_mask"):
                module.weight.mul_(module.weight_mask)
    return model


def make(name: str, kwargs: dict, seed: int = 0) -> torch.nn.Module:
    return randomize(timm.create_model(name, **kwargs), seed)


def images(size: int, n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _perturbation(param: torch.Tensor) -> torch.Tensor:
    """Noise at the scale of ``param`` itself. Unit noise on weights of scale 1/sqrt(fan_in) grows
    the later stripes' activations by about sqrt(fan_in) per layer, to inf in float32 in a deep
    ResNet-50; the single full-width pass of ``forward_stages`` then multiplies the structural
    zeros by inf, and the NaN reaches the earlier stages (finite activations are its premise)."""
    return torch.randn_like(param) * param.pow(2).mean().sqrt()


@pytest.mark.parametrize(("name", "kwargs", "size"), CASES)
@pytest.mark.parametrize("train", [False, True])
def test_perturbing_a_later_stage_leaves_earlier_stages_bit_for_bit_unchanged(name, kwargs, size, train) -> None:
    """Each of the three execution paths, compared with itself before and after the perturbation."""
    model = make(name, kwargs).train(train)
    x = images(size)

    def run_all(net: torch.nn.Module) -> tuple[list, list, list]:
        with torch.no_grad():
            stages = net.forward_stages(x)
            anytime = list(net.forward_anytime(x))
            active = []
            for k in range(1, net.num_stages + 1):
                net.set_active_stage(k)
                active.append(net(x))
            net.set_active_stage(net.num_stages)
        return stages, anytime, active

    before = run_all(model)
    for j in range(2, model.num_stages + 1):
        perturbed = make(name, kwargs).train(train)
        with torch.no_grad():
            for param, mask in perturbed.stage_masks(j).items():
                param.add_(_perturbation(param) * mask)
        after = run_all(perturbed)
        assert all(torch.isfinite(out).all() for out in after[0]), "perturbation overflowed: see _perturbation"
        for path, old, new in zip(
            ("forward_stages", "forward_anytime", "set_active_stage"), before, after, strict=True
        ):
            for k in range(1, j):
                assert torch.equal(new[k - 1], old[k - 1]), f"{path}: stage {k} moved when stage {j} changed"
        after_stages, before_stages = after[0], before[0]
        # ...while the perturbed stage itself does change (so the test can fail).
        assert not torch.allclose(after_stages[j - 1], before_stages[j - 1])


@pytest.mark.parametrize(("name", "kwargs", "size"), CASES)
@pytest.mark.parametrize("train", [False, True])
def test_gradients_of_a_stage_loss_are_zero_on_later_parameters(name, kwargs, size, train) -> None:
    model = make(name, kwargs).train(train)
    x = images(size)
    params = list(model.parameters())
    for i, logits in enumerate(model.forward_stages(x), start=1):
        grads = torch.autograd.grad(logits.square().mean(), params, retain_graph=True, allow_unused=True)
        by_param = dict(zip(params, grads, strict=True))
        reached = model.subnetwork_masks(i)
        for j in range(i + 1, model.num_stages + 1):
            for param, mask in model.stage_masks(j).items():
                grad = by_param[param]
                if grad is not None:
                    assert torch.count_nonzero(grad[mask]) == 0, f"L_{i} has a gradient on stage {j}"
        # ... and L_i does reach its own subnetwork (so the test above is not vacuous).
        own = [by_param[p][m] for p, m in model.stage_masks(i).items() if by_param[p] is not None]
        assert any(torch.count_nonzero(g) > 0 for g in own)
        for param, grad in by_param.items():  # nothing outside D_i moves under L_i
            if grad is not None and param not in reached:
                assert torch.count_nonzero(grad) == 0


@pytest.mark.parametrize(("name", "kwargs", "size"), CASES)
def test_four_ways_to_run_a_stage_agree(name, kwargs, size) -> None:
    model = make(name, kwargs).eval()
    x = images(size)
    with torch.no_grad():
        stages = model.forward_stages(x)
        anytime = list(model.forward_anytime(x))
        assert len(stages) == len(anytime) == model.num_stages
        for k in range(1, model.num_stages + 1):
            model.set_active_stage(k)
            active = model(x)
            plain = model.extract_stage(k).eval()
            standalone = plain(x)
            for other in (anytime[k - 1], active, standalone):
                torch.testing.assert_close(other, stages[k - 1], rtol=1e-4, atol=1e-4)
            assert stages[k - 1].abs().max() > 0.1  # a real signal, not a vanished network
        model.set_active_stage(model.num_stages)
        torch.testing.assert_close(model(x), stages[-1], rtol=0, atol=0)


def test_extract_stage_returns_plain_networks() -> None:
    imagenet = make("anytime_resnet18_w124", {"width": 0.25})
    plain = imagenet.extract_stage(2)
    assert type(plain) is ResNet
    assert plain.fc.in_features == imagenet.feature_splits[2]
    cifar = make("anytime_cifar_resnet20_w124", {})
    small = cifar.extract_stage(1)
    assert type(small) is CifarResNet
    assert small.conv1.out_channels == 4
    reference = timm.create_model("cifar_resnet20", width=0.25)  # the registered plain network
    assert {k: v.shape for k, v in small.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }


@pytest.mark.parametrize(("name", "kwargs", "size"), CASES)
def test_every_parameter_gets_a_gradient(name, kwargs, size) -> None:
    """Replaces timm's test_model_backward for anytime models: model(x) is D_S alone, so earlier
    heads only receive gradients from their own stage's loss."""
    model = timm.create_model(name, num_classes=42, **kwargs).train()
    sum(logits.mean() for logits in model.forward_stages(images(size, n=2))).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    model.zero_grad()
    model(images(size, n=2)).mean().backward()
    heads = {id(p) for k in range(1, model.num_stages) for p in model.head_parameters(k)}
    assert all((p.grad is None) == (id(p) in heads) for p in model.parameters())


@pytest.mark.parametrize(("name", "kwargs", "size"), CASES)
def test_stage_flops_match_the_dense_fraction_formula(name, kwargs, size) -> None:
    """FLOPs(D_k), counted on the striped forward_anytime path, equals stem + head + the SPEC's
    dense fraction of the body of a dense network of D_k's width (extract_stage(k): a timm ResNet
    or CifarResNet, which runs every layer as one dense kernel)."""
    model = timm.create_model(name, **kwargs)
    costs = stage_costs(model, (3, size, size))
    x = torch.randn(1, 3, size, size)
    for k, cost in enumerate(costs, start=1):
        dense = model.extract_stage(k).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            dense.conv1(x)
        stem = counter.get_total_flops()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            dense.fc(torch.zeros(1, dense.fc.in_features))
        head = counter.get_total_flops()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            dense(x)
        body = counter.get_total_flops() - stem - head
        expected = stem + head + float(model.spec.dense_fraction(k)) * body
        assert abs(cost.flops - expected) / expected < 0.02, f"stage {k}: {cost.flops} vs {expected:.0f}"
        assert cost.active_flops == counter.get_total_flops()  # set_active_stage runs the dense kernels
        assert cost.anytime_flops >= cost.flops
    assert costs[-1].flops > 2 * costs[0].flops  # the stages really grow


def test_format_costs_prints_one_aligned_row_per_stage_in_millions_and_giga() -> None:
    table = format_costs([StageCost(1, 1_994_000, 556_000_000, 556_100_000, 556_200_000), StageCost(2, 42, 1, 2, 3)])
    header, first, second = table.splitlines()
    assert header.split() == ["stage", "params", "(M)", "GFLOPs", "D_k", "GFLOPs", "anytime", "GFLOPs", "active"]
    assert first.split() == ["1", "1.994", "0.5560", "0.5561", "0.5562"]
    assert second.split() == ["2", "0.000", "0.0000", "0.0000", "0.0000"]
    assert len(header) == len(first) == len(second)  # right-aligned columns


def test_dense_fraction_values_from_the_spec() -> None:
    assert StripeSpec.parse("w124").dense_fraction() == Fraction(11, 16)
    assert StripeSpec.parse("e1234").dense_fraction() == Fraction(10, 16)
    assert StripeSpec.parse("w124").splits(64) == (0, 16, 32, 64)
    assert StripeSpec.parse("w1248").widths == (1, 1, 2, 4)


def test_subnetwork_sizes_feed_osgd_reach_masks() -> None:
    model = timm.create_model("anytime_cifar_resnet20_w124")
    sizes = model.subnetwork_sizes()
    assert sizes[0] < sizes[1] < sizes[2]
    masks = model.osgd_reach_masks()
    assert [sum(int(m.sum()) for m in task.values()) for task in masks] == sizes
    # d_S counts every parameter element except the structural zeros and the earlier heads.
    zeros = sum(
        int((m.weight_mask.expand_as(m.weight) == 0).sum()) for m in model.modules() if hasattr(m, "weight_mask")
    )
    earlier_heads = sum(p.numel() for k in (1, 2) for p in model.head_parameters(k))
    assert sizes[-1] == sum(p.numel() for p in model.parameters()) - zeros - earlier_heads


def test_osgd_trains_a_nested_model_without_touching_earlier_stages_from_later_losses() -> None:
    from osgd import OSGD

    model = timm.create_model("anytime_cifar_resnet20_w124").train()
    opt = OSGD(
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        method="norm",
        reach_masks=model.osgd_reach_masks(),
    )
    x, y = images(32, n=8), torch.randint(0, 10, (8,))
    info = opt.backward([torch.nn.functional.cross_entropy(z, y) for z in model.forward_stages(x)])
    assert info.task_dims.tolist() == [float(d) for d in model.subnetwork_sizes()]
    opt.step()
    for module in model.modules():  # the structural zeros stay zero through a step
        if hasattr(module, "weight_mask"):
            assert torch.count_nonzero(module.weight * (1 - module.weight_mask)) == 0


def test_bad_names_specs_and_stages_give_clear_errors() -> None:
    with pytest.raises(RuntimeError, match="anytime_resnet51_w124"):
        timm.create_model("anytime_resnet51_w124")
    with pytest.raises(ValueError, match="power-of-two nesting lists 1, 2, 4"):
        StripeSpec.parse("w142")
    with pytest.raises(ValueError, match="even nesting lists 1, 2, 3"):
        StripeSpec.parse("e1324")
    with pytest.raises(ValueError, match="unknown width nesting"):
        timm.create_model("anytime_cifar_resnet20_w124", nesting="x12")
    with pytest.raises(ValueError, match=r"must be a\s+multiple of 4"):
        timm.create_model("anytime_cifar_resnet20_w124", width=0.3)
    for empty in (0, -1, 0.01):  # 0 built a model that failed only in its first forward
        with pytest.raises(ValueError, match=rf"width={empty} leaves a stage with no channels"):
            timm.create_model("anytime_cifar_resnet20_w124", width=empty)
    model = timm.create_model("anytime_cifar_resnet20_w124")
    for bad in (0, 4, -1, 1.5, "2"):
        with pytest.raises(ValueError, match=r"stage must be an integer in 1\.\.3"):
            model.set_active_stage(bad)
        with pytest.raises(ValueError, match=r"stage must be an integer in 1\.\.3"):
            model.extract_stage(bad)


def test_timm_citizenship() -> None:
    model = timm.create_model("anytime_cifar_resnet20_w124", num_classes=7)
    assert model.pretrained_cfg["classifier"] == ("fc.0", "fc.1", "fc.2")
    assert model.get_classifier() is model.fc[2]
    model.set_active_stage(1)
    assert model.get_classifier(name_only=True) == "fc.0"
    assert model.forward_head(model.forward_features(images(32)), pre_logits=True).shape == (3, 16)
    model.set_active_stage(3)
    model.reset_classifier(5)
    assert [h.out_features for h in model.fc] == [5, 5, 5]
    model.reset_classifier(0)
    assert model(images(32)).shape == (3, model.num_features)
    features = timm.create_model("anytime_cifar_resnet20_w124", features_only=True)
    assert [f.shape[1] for f in features(images(32))] == [16, 16, 32, 64]
    matcher = model.group_matcher()
    assert set(matcher) == {"stem", "blocks"}
    ref = make("anytime_cifar_resnet20_w124", {}).eval()
    out = ref(images(32))
    ref.set_grad_checkpointing(True)
    torch.testing.assert_close(ref(images(32)), out)
    scripted = torch.jit.script(make("anytime_cifar_resnet20_w124", {}).eval())
    torch.testing.assert_close(scripted(images(32)), out, rtol=1e-5, atol=1e-5)
    on_meta = timm.create_model("anytime_cifar_resnet20_w124", device="meta", dtype=torch.bfloat16)
    assert all(p.device.type == "meta" and p.dtype == torch.bfloat16 for p in on_meta.parameters())


def test_inference_stays_nested_when_the_structural_zeros_are_overwritten() -> None:
    """Inference skips the mask only while the masked-out weights are verified zero; re-initializing
    the convolutions (which writes the zeros) must not leak later stripes into earlier stages."""
    model = make("anytime_cifar_resnet20_w124", {}).eval()
    x = images(32)
    with torch.no_grad():
        expected = model.forward_stages(x)
        model.set_active_stage(1)
        stage1 = model(x)
        for module in model.modules():  # e.g. model.apply(some_init) touching every weight element
            if hasattr(module, "weight_mask"):
                module.weight.add_(torch.randn_like(module.weight) * (1 - module.weight_mask))
        torch.testing.assert_close(model(x), stage1, rtol=0, atol=0)
        model.set_active_stage(3)
        torch.testing.assert_close(model(x), expected[2], rtol=1e-5, atol=1e-5)
    assert any(not m._zeros_hold for m in model.modules() if hasattr(m, "weight_mask"))


@pytest.mark.parametrize("batch", [1, 3])
def test_anytime_inference_follows_weight_updates(batch: int) -> None:
    """The inference path caches contiguous stripe weights and stripe buffers: both must track the
    weights (a training step between two calls) and agree with each stage run alone."""
    torch.manual_seed(0)
    model = nontrivial_batchnorm(timm.create_model("anytime_cifar_resnet20_w124", num_classes=10, width=0.5))
    x = torch.randn(batch, 3, 32, 32)
    with torch.no_grad():
        before = list(model.forward_anytime(x))
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param) * getattr(param, "weight_mask", 1.0))
        for module in model.modules():
            if hasattr(module, "weight_mask"):
                module.weight.mul_(module.weight_mask)
        after = list(model.forward_anytime(x))
        for k, logits in enumerate(after, start=1):
            model.set_active_stage(k)
            torch.testing.assert_close(logits, model(x), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(before[-1], after[-1])


def test_inference_caches_follow_replaced_weights() -> None:
    """The inference caches (verified zeros, contiguous stripe weights) must also notice weights that
    are replaced rather than changed in place: ``model.double()``, or ``vector_to_parameters``
    (``param.data = ...``, which keeps the version counter). Reference: a fresh model that never
    cached anything, loaded with the same state."""
    torch.manual_seed(0)
    model = nontrivial_batchnorm(timm.create_model("anytime_cifar_resnet20_w124", num_classes=10, width=0.5)).eval()
    x = torch.randn(2, 3, 32, 32)

    def fresh(dtype: torch.dtype) -> torch.nn.Module:
        ref = timm.create_model("anytime_cifar_resnet20_w124", num_classes=10, width=0.5).to(dtype).eval()
        ref.load_state_dict(model.state_dict())
        return ref

    def stage_outputs(net: torch.nn.Module, inputs: torch.Tensor) -> list[torch.Tensor]:
        outputs = list(net.forward_anytime(inputs))
        for k in range(1, net.num_stages + 1):
            net.set_active_stage(k)
            outputs.append(net(inputs))
        return outputs

    with torch.no_grad():
        stage_outputs(model, x)  # fill the caches
        vector = torch.nn.utils.parameters_to_vector(model.parameters())
        torch.nn.utils.vector_to_parameters(vector + 0.05 * torch.randn_like(vector), model.parameters())
        for got, want in zip(stage_outputs(model, x), stage_outputs(fresh(torch.float32), x), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        model.double()
        for got, want in zip(
            stage_outputs(model, x.double()), stage_outputs(fresh(torch.float64), x.double()), strict=True
        ):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_nested_batchnorm_inference_views_follow_every_change() -> None:
    """NestedBatchNorm2d keeps, in inference, views of its statistics and parameters between calls.
    Reference: ``F.batch_norm`` on freshly sliced tensors, after each way the tensors can change."""
    from torch.nn import functional as F

    from timm_anytime.layers.nested import NestedBatchNorm2d

    torch.manual_seed(0)
    bn = NestedBatchNorm2d(8, spec=StripeSpec.parse("w124")).eval()
    x = torch.randn(2, 8, 4, 4)

    def check(stage: int = 2) -> None:
        bn.stage = stage
        c = bn.splits[stage]
        with torch.no_grad():
            got = bn(x[:, :c])
        want = F.batch_norm(
            x[:, :c], bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c], False, 0.0, bn.eps
        )
        torch.testing.assert_close(got, want, rtol=0, atol=0)

    check()  # fills the cache
    bn.stage = 3
    bn.train()(x)  # batch statistics move the running ones in place
    bn.eval()
    check()
    with torch.no_grad():
        bn.weight.mul_(3.0)  # an in-place parameter update (an optimizer step)
    check()
    bn.running_var = torch.rand(8) + 0.5  # a replaced buffer
    bn.bias.data = torch.randn(8)  # a replaced parameter (keeps the version counter)
    check()
    check(stage=3)
    # With autograd on, the cached views (made without autograd) must not be used: the gradient
    # reaches the parameters.
    bn.stage = 2
    bn(x[:, : bn.splits[2]]).sum().backward()
    assert bn.weight.grad is not None
    assert bn.weight.grad[: bn.splits[2]].abs().sum() > 0


def test_a_biased_nested_conv_is_the_prefix_of_a_dense_block_triangular_conv() -> None:
    """NestedConv2d(bias=True), which no registered model uses: every stage, every stripe range and
    the ownership map against F.conv2d in float64 with the block lower-triangular weight built here."""
    from timm_anytime.layers.nested import NestedConv2d

    torch.manual_seed(0)
    conv = NestedConv2d(8, 16, 3, padding=1, spec=StripeSpec.parse("w124"), bias=True).double()
    with torch.no_grad():
        conv.weight.normal_()  # including the structural zeros: the layer must mask them itself
        conv.bias.normal_()
    ins, outs = [0, 2, 4, 8], [0, 4, 8, 16]  # w124: stripes of 1/4, 1/4, 1/2
    reference = torch.zeros_like(conv.weight)
    for j in range(1, 4):
        reference[outs[j - 1] : outs[j], : ins[j]] = conv.weight[outs[j - 1] : outs[j], : ins[j]]
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    full = F.conv2d(x, reference, conv.bias, padding=1)
    with torch.no_grad():
        for k in (1, 2, 3):
            conv.stage = k
            torch.testing.assert_close(conv(x[:, : ins[k]]), full[:, : outs[k]])
        for lo, hi in ((1, 1), (2, 3), (3, 3)):
            torch.testing.assert_close(conv.forward_stripes(x[:, : ins[hi]], lo, hi), full[:, outs[lo - 1] : outs[hi]])
    owner = conv.stage_of_elements()
    assert owner["bias"].tolist() == [1] * 4 + [2] * 4 + [3] * 8
    assert int((owner["weight"] > 0).sum()) == int((reference != 0).sum())
    assert "stripes=[0, 4, 8, 16]" in repr(conv)
