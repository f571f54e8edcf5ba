"""timm_anytime.significance against published values: Student-t tables and a worked Welch test."""

from __future__ import annotations

import pytest

from timm_anytime.significance import mcnemar_test, student_t_cdf, student_t_quantile, welch_test


@pytest.mark.parametrize(
    ("q", "df", "table"),
    [(0.975, 4, 2.776445), (0.975, 10, 2.228139), (0.8, 4, 0.940965), (0.95, 2, 2.919986), (0.025, 30, -2.042272)],
)
def test_quantiles_match_the_t_table(q: float, df: float, table: float) -> None:
    assert student_t_quantile(q, df) == pytest.approx(table, abs=1e-6)
    assert student_t_cdf(table, df) == pytest.approx(q, abs=1e-6)


def test_cauchy_closed_form() -> None:
    """t with 1 degree of freedom is the Cauchy distribution: CDF = 1/2 + atan(t)/pi."""
    import math

    for t in (-3.0, -0.5, 0.25, 4.0):
        assert student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)


def test_welch_matches_the_worked_example() -> None:
    """Welch's t-test, Wikipedia's first example: t = -2.46, df = 24.99, p = 0.021."""
    a = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
    b = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
    result = welch_test(a, b)
    assert result.t == pytest.approx(-2.46, abs=0.005)
    assert result.df == pytest.approx(24.99, abs=0.01)
    assert result.p == pytest.approx(0.021, abs=0.0005)
    assert result.ci95[0] < result.difference < result.ci95[1] < 0  # significant: the interval excludes 0
    # (t_.975 + t_.8) x SE at df 24.99: 2.0596 + 0.8562 = 2.9158 standard errors
    assert result.detectable == pytest.approx(2.9158 * abs(result.difference / result.t), rel=1e-3)


def test_welch_is_symmetric_and_names_bad_input() -> None:
    a, b = [50.1, 51.3, 49.8], [52.0, 51.1, 53.4]
    forward, backward = welch_test(a, b), welch_test(b, a)
    assert forward.p == pytest.approx(backward.p)
    assert forward.difference == pytest.approx(-backward.difference)
    with pytest.raises(ValueError, match="at least 2 values per sample"):
        welch_test([1.0], b)
    with pytest.raises(ValueError, match="zero variance"):
        welch_test([1.0, 1.0], [2.0, 2.0])


@pytest.mark.parametrize(
    ("only_a", "only_b", "p"),
    [(3, 0, 2 / 8), (5, 1, 2 * 7 / 64), (2, 12, 2 * 106 / 2**14), (0, 0, 1.0), (10, 10, 1.0)],
)
def test_mcnemar_matches_the_binomial_closed_form(only_a: int, only_b: int, p: float) -> None:
    """p = 2 * P(X <= min) for X ~ Binomial(discordant, 1/2), counted by hand above; the inputs both
    get right or both wrong must not matter."""
    a = [True] * only_a + [False] * only_b + [True] * 7 + [False] * 4
    b = [False] * only_a + [True] * only_b + [True] * 7 + [False] * 4
    result = mcnemar_test(a, b)
    assert (result.only_a, result.only_b, result.n) == (only_a, only_b, len(a))
    assert result.p == pytest.approx(p, rel=1e-12)
    assert mcnemar_test(b, a).p == result.p


def test_mcnemar_at_test_split_size_matches_the_incomplete_beta_function() -> None:
    """163 against 117 discordant inputs (the early-exit comparison of docs/evaluation.md): the binomial
    CDF as the regularized incomplete beta function, P(X <= k) = I_{1/2}(n - k, k + 1)."""
    import mpmath

    result = mcnemar_test([True] * 163 + [False] * 117, [False] * 163 + [True] * 117)
    expected = 2 * float(mpmath.betainc(280 - 117, 117 + 1, 0, 0.5, regularized=True))
    assert result.p == pytest.approx(expected, rel=1e-9)
    assert 0.005 < result.p < 0.01  # near the continuity-corrected chi-square's 0.007


def test_mcnemar_names_inputs_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="same inputs: got 3 and 2"):
        mcnemar_test([True, False, True], [True, False])
