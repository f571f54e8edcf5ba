"""The pure combination math against float64 references and closed-form properties."""

from __future__ import annotations

import itertools

import pytest
import torch

from osgd import Combiner, combine, combine_with_info, gram_matrix
from tests.osgd.reference import reference_norm, reference_normalize, reference_osgd


def random_tasks(n: int, p: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, p, generator=gen, dtype=torch.float64).to(dtype)


def nested_tasks(sizes: list[int], seed: int) -> torch.Tensor:
    """Zero-padded gradients of nested subnetworks: task i reaches the first sizes[i] entries."""
    J = random_tasks(len(sizes), sizes[-1], seed)
    for i, size in enumerate(sizes):
        J[i, size:] = 0
    return J


@pytest.mark.parametrize("n", [1, 2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_osgd_matches_explicit_gram_schmidt_for_every_priority(n: int, seed: int) -> None:
    J = random_tasks(n, 40, seed)
    for priority in itertools.permutations(range(n)):
        expected = reference_osgd(J, list(priority))
        torch.testing.assert_close(combine(J, "osgd", priority), expected, rtol=1e-10, atol=1e-12)


def test_osgd_on_nested_zero_padded_gradients_matches_reference() -> None:
    J = nested_tasks([10, 30, 70], seed=3)
    torch.testing.assert_close(combine(J, "osgd"), reference_osgd(J), rtol=1e-10, atol=1e-12)
    # The part of a later gradient that only it reaches is never projected (Alg. 2's zero padding).
    out = combine(J, "osgd")
    torch.testing.assert_close(out[30:], J[2, 30:])


def test_float32_input_agrees_with_float64_reference() -> None:
    J = random_tasks(4, 5000, seed=7)
    out = combine(J.float(), "osgd")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), reference_osgd(J), rtol=1e-4, atol=1e-4)


def test_bfloat16_input_reduces_in_float32_and_stays_close() -> None:
    J = random_tasks(3, 2000, seed=8)
    out = combine(J.to(torch.bfloat16), "osgd")
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out).all()
    expected = reference_osgd(J.to(torch.bfloat16).double())
    rel = (out.double() - expected).norm() / expected.norm()
    assert rel < 1e-2


@pytest.mark.parametrize("priority", [[0, 1, 2], [2, 0, 1], [1, 2, 0]])
def test_highest_priority_gradient_passes_unchanged(priority: list[int]) -> None:
    J = random_tasks(3, 50, seed=11)
    top = J[priority[0]]
    out = combine(J, "osgd", priority)
    # Every later u_k is orthogonal to the top gradient, so its component along it is itself.
    torch.testing.assert_close(out @ top, top @ top, rtol=1e-10, atol=0)
    # With the other tasks zeroed, the result is the top gradient exactly.
    only_top = torch.zeros_like(J)
    only_top[priority[0]] = top
    torch.testing.assert_close(combine(only_top, "osgd", priority), top)


def test_each_orthogonalized_component_is_orthogonal_to_every_higher_priority_gradient() -> None:
    J = random_tasks(4, 30, seed=12)
    priority = [3, 1, 0, 2]
    previous = torch.zeros(30, dtype=torch.float64)
    for k in range(1, 5):
        prefix = torch.zeros_like(J)
        prefix[priority[:k]] = J[priority[:k]]
        current = combine(prefix, "osgd", priority)
        u_k = current - previous  # the component added by the k-th priority task
        for j in priority[: k - 1]:
            assert abs(float(u_k @ J[j])) < 1e-9 * float(J[j].norm() * u_k.norm() + 1)
        previous = current


def test_orthogonal_set_gives_the_plain_sum() -> None:
    Q, _ = torch.linalg.qr(random_tasks(20, 4, seed=13))  # orthonormal columns
    J = Q.T * torch.tensor([[1.0], [2.0], [0.5], [3.0]], dtype=torch.float64)
    for priority in ([0, 1, 2, 3], [3, 2, 1, 0]):
        torch.testing.assert_close(combine(J, "osgd", priority), J.sum(0), rtol=1e-10, atol=1e-12)


def test_single_task_is_identity_for_sum_and_osgd() -> None:
    g = random_tasks(1, 25, seed=14)
    torch.testing.assert_close(combine(g, "osgd"), g[0])
    torch.testing.assert_close(combine(g, "sum"), g[0])


@pytest.mark.parametrize("method", ["sum", "osgd"])
def test_sum_and_osgd_scale_linearly_with_the_losses(method: str) -> None:
    J = random_tasks(3, 40, seed=15)
    torch.testing.assert_close(combine(1024.0 * J, method), 1024.0 * combine(J, method), rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("method", ["norm", "osgd_norm"])
def test_normalized_methods_remove_the_loss_scale(method: str) -> None:
    J = random_tasks(3, 40, seed=16)
    torch.testing.assert_close(combine(1024.0 * J, method), combine(J, method), rtol=1e-10, atol=1e-12)


def test_sum_is_the_weighted_mean_of_eq_1() -> None:
    J = random_tasks(3, 20, seed=17)
    k = torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64)
    torch.testing.assert_close(combine(J, "sum", task_weights=k.tolist()), (k[:, None] * J).sum(0) / k.sum())
    torch.testing.assert_close(combine(J, "sum"), J.mean(0))
    torch.testing.assert_close(combine(J, "sum", reduction="sum"), J.sum(0))


def test_norm_matches_reference_on_nested_gradients() -> None:
    J = nested_tasks([6, 16, 40], seed=18)
    reach = J != 0
    torch.testing.assert_close(combine(J, "norm"), reference_norm(J, reach), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(combine(J, "norm", norm_scale=2.0), reference_norm(J, reach, C=2.0))


def test_norm_gives_each_task_norm_c_sqrt_d_on_its_own_parameters() -> None:
    # Disjoint supports: each element is reached by exactly one task, so no averaging.
    J = torch.zeros(3, 60, dtype=torch.float64)
    J[0, :10], J[1, 10:30], J[2, 30:] = 3.0, -0.01, 7.0
    out = combine(J, "norm", norm_scale=0.5)
    for (lo, hi), d in zip([(0, 10), (10, 30), (30, 60)], [10, 20, 30], strict=True):
        assert float(out[lo:hi].norm()) == pytest.approx(0.5 * d**0.5, rel=1e-12)


def test_osgd_norm_is_gram_schmidt_of_the_normalized_gradients() -> None:
    J = nested_tasks([8, 20, 50], seed=19)
    dims = (J != 0).sum(1).tolist()
    expected = reference_osgd(reference_normalize(J, dims))
    torch.testing.assert_close(combine(J, "osgd_norm"), expected, rtol=1e-10, atol=1e-12)


def test_explicit_task_dims_override_the_count() -> None:
    J = random_tasks(2, 10, seed=20)
    expected = reference_osgd(reference_normalize(J, [4.0, 100.0]))
    torch.testing.assert_close(combine(J, "osgd_norm", task_dims=[4, 100]), expected)


def test_mean_reduction_divides_osgd_by_the_number_of_tasks() -> None:
    J = random_tasks(3, 20, seed=21)
    torch.testing.assert_close(combine(J, "osgd", reduction="mean"), reference_osgd(J) / 3)


@pytest.mark.parametrize("method", ["sum", "norm", "osgd", "osgd_norm"])
def test_zero_and_linearly_dependent_gradients_never_give_nan(method: str) -> None:
    g = random_tasks(1, 30, seed=22)[0]
    J = torch.stack([g, 2.0 * g, torch.zeros_like(g), -g, g + 1e-12 * torch.ones_like(g)])
    out = combine(J, method)
    assert torch.isfinite(out).all()
    if method == "osgd":  # everything after the first is parallel to it or zero
        torch.testing.assert_close(out, g)
    assert torch.isfinite(combine(torch.zeros(3, 10), method)).all()
    assert torch.isfinite(combine(J.to(torch.bfloat16), method)).all()


@pytest.mark.parametrize("rms", [1e-40, 1e-30])
@pytest.mark.parametrize("method", ["norm", "osgd_norm"])
def test_a_subnormal_float32_gradient_counts_as_zero_when_normalizing(method: str, rms: float) -> None:
    """A task trained to a loss of exactly 0 leaves float32 gradients with subnormal entries: its
    normalizing factor C / rms (5e39 here) overflowed float32 and the update became inf. Such a
    gradient counts as zero; one of a normal float32 (rms 1e-30) is still normalized."""
    exact = random_tasks(3, 40, seed=23)
    exact[2] = rms * torch.sign(exact[2])  # |g_2| / sqrt(d) = rms
    grads, reach, dims = exact.to(torch.float32), torch.ones(3, 40, dtype=torch.bool), [40.0] * 3
    expected_input = exact.clone()
    if rms < torch.finfo(torch.float32).tiny:
        expected_input[2] = 0  # what the reference does with a zero gradient: it stays zero
    if method == "norm":
        expected = reference_norm(expected_input, reach)
    else:
        expected = reference_osgd(reference_normalize(expected_input, dims))
    out = combine(grads, method, reach=reach)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)


def test_info_reports_norms_cosines_and_removed_fraction() -> None:
    g1 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    g2 = torch.tensor([1.0, 1.0], dtype=torch.float64)  # 45 degrees from g1
    out, info = combine_with_info(torch.stack([g1, g2]), "osgd")
    torch.testing.assert_close(out, torch.tensor([1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(info.grad_norm, torch.tensor([1.0, 2**0.5], dtype=torch.float64))
    assert float(info.cosine[0, 1]) == pytest.approx(2**-0.5)
    # u_2 = (0, 1): its norm is 1/sqrt(2) of |g2|, so 1 - 1/sqrt(2) of the norm was removed.
    torch.testing.assert_close(info.removed_fraction, torch.tensor([0.0, 1 - 2**-0.5], dtype=torch.float64))
    assert info.as_dict()["priority"] == [0, 1]


def test_bad_arguments_name_the_problem() -> None:
    J = random_tasks(3, 5, seed=23)
    with pytest.raises(ValueError, match="unknown method 'adam'"):
        combine(J, "adam")
    with pytest.raises(ValueError, match="'greedy' is a training schedule"):
        combine(J, "greedy")
    with pytest.raises(ValueError, match="permutation"):
        combine(J, "osgd", priority=[0, 0, 1])
    with pytest.raises(ValueError, match="names 2 tasks, but got 3 losses"):
        combine(J, "osgd", priority=[1, 0])
    with pytest.raises(ValueError, match="task_weights only apply to method='sum'"):
        combine(J, "osgd", task_weights=[1, 1, 1])
    with pytest.raises(ValueError, match="matrix"):
        combine(J[0], "osgd")
    bad = J.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"tasks \[1\] contain NaN"):
        combine(bad, "osgd")
    with pytest.raises(ValueError, match="unknown reduction"):
        Combiner("osgd", reduction="avg")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"method": "sum", "task_weights": [1.0, -1.0, 1.0]}, r"task_weights=\[1\.0, -1\.0, 1\.0\] must be finite"),
        ({"method": "sum", "task_weights": [1.0, float("nan"), 1.0]}, "must be finite"),
        ({"method": "sum", "task_weights": [0.0, 0.0, 0.0]}, "with a positive sum"),
        ({"method": "norm", "norm_scale": 0.0}, "norm_scale must be a positive number, got 0.0"),
        ({"method": "norm", "norm_scale": float("nan")}, "norm_scale must be a positive number, got nan"),
        ({"method": "osgd", "eps": 1.0}, r"eps must be in \[0, 1\), got 1.0"),
        ({"method": "osgd", "eps": -0.1}, r"eps must be in \[0, 1\)"),
    ],
)
def test_invalid_settings_are_refused_when_the_combiner_is_built(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Combiner(**settings)


def test_inputs_that_disagree_with_the_task_count_name_both_sizes() -> None:
    J = random_tasks(3, 5, seed=24)
    with pytest.raises(ValueError, match="task_weights has 2 entries, but got 3 losses"):
        combine(J, "sum", task_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="task_dims has 2 entries, but got 3 losses"):
        combine(J, "osgd_norm", task_dims=[4, 5])
    with pytest.raises(ValueError, match=r"reach must be a bool mask shaped like grads \(3, 5\)"):
        combine(J, "norm", reach=torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"floating-point tensor, got torch\.int64"):
        combine(J.long(), "osgd")
    with pytest.raises(ValueError, match=r"non-empty square matrix, got shape \(2, 3\)"):
        Combiner("osgd").weights(torch.ones(2, 3), [5.0, 5.0])
    with pytest.raises(ValueError, match=r"grads must be a matrix \[num_tasks, num_params\], got shape \(5,\)"):
        gram_matrix(J[0])
