"""Is a difference between two sets of runs (seeds) larger than their noise?

``welch_test(a, b)`` compares the means of two small samples with unequal variances (Welch's
t-test, Welch-Satterthwaite degrees of freedom) and reports what a reader needs besides the p-value:
the difference, its 95% confidence interval, Cohen's d and the smallest difference the samples
could have detected (``detectable``: two-sided test at ``alpha``, power ``power``, from the usual
normal-theory approximation ``(t_{1-alpha/2} + t_{power}) * SE`` with the observed standard error).
A difference below ``detectable`` that is not significant is "not detected at this n", not
"no effect". The approximation is optimistic for tiny samples: simulated with 3 seeds per side and
equal true variances, a true difference of ``detectable`` was detected in 69% of 2,000 trials, not
80% (10 seeds: 79%), so read it as a lower bound on what the runs could miss.

``mcnemar_test(a, b)`` compares two classifiers scored on the same inputs (per-input right or
wrong): the exact two-sided binomial test on the inputs where exactly one of them is right. It
covers the sampling of the test inputs only, not the variation between training runs: with one
run per side, a significant result says these two trained networks differ, not that their recipes do.

The Student-t distribution comes from mpmath (installed with torch, through sympy): its regularized
incomplete beta function gives the CDF to full float64 precision.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import mpmath


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    tail = 0.5 * float(mpmath.betainc(df / 2, 0.5, 0, df / (df + t * t), regularized=True))
    return 1.0 - tail if t > 0 else tail


def student_t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom (0 < q < 1)."""
    if not 0 < q < 1:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    if q == 0.5:
        return 0.0
    low, high = -1.0, 1.0
    while student_t_cdf(low, df) > q:
        low *= 2
    while student_t_cdf(high, df) < q:
        high *= 2
    return float(mpmath.findroot(lambda x: student_t_cdf(float(x), df) - q, (low, high), solver="anderson"))


@dataclass(frozen=True)
class WelchResult:
    """``mean(a) - mean(b)`` and its test; see the module docstring."""

    difference: float
    ci95: tuple[float, float]
    t: float
    df: float
    p: float
    cohens_d: float
    detectable: float  # smallest |difference| detected with probability `power` at `alpha`
    n: tuple[int, int]

    def __str__(self) -> str:
        low, high = self.ci95
        return (
            f"{self.difference:+.2f} (95% CI {low:+.2f} to {high:+.2f}; Welch t = {self.t:.2f}, df = {self.df:.1f}, "
            f"p = {self.p:.3f}; d = {self.cohens_d:.2f}; n = {self.n[0]}/{self.n[1]}; "
            f"detectable ~{self.detectable:.2f})"
        )


def welch_test(a: Sequence[float], b: Sequence[float], alpha: float = 0.05, power: float = 0.8) -> WelchResult:
    """Welch's two-sided t-test of ``mean(a) == mean(b)``; each sample needs at least 2 values."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Welch's test needs at least 2 values per sample (seeds), got {len(a)} and {len(b)}")
    mean_a, mean_b = statistics.fmean(a), statistics.fmean(b)
    var_a, var_b = statistics.variance(a), statistics.variance(b)
    se_a, se_b = var_a / len(a), var_b / len(b)
    difference = mean_a - mean_b
    se = math.sqrt(se_a + se_b)
    if se == 0:
        raise ValueError("both samples have zero variance: the test is undefined")
    df = (se_a + se_b) ** 2 / (se_a**2 / (len(a) - 1) + se_b**2 / (len(b) - 1))
    t = difference / se
    p = 2 * student_t_cdf(-abs(t), df)
    critical, t95 = student_t_quantile(1 - alpha / 2, df), student_t_quantile(0.975, df)
    pooled = math.sqrt(((len(a) - 1) * var_a + (len(b) - 1) * var_b) / (len(a) + len(b) - 2))
    return WelchResult(
        difference=difference,
        ci95=(difference - t95 * se, difference + t95 * se),
        t=t,
        df=df,
        p=p,
        cohens_d=difference / pooled,
        detectable=(critical + student_t_quantile(power, df)) * se,
        n=(len(a), len(b)),
    )


@dataclass(frozen=True)
class PairedResult:
    """:func:`mcnemar_test`'s answer: the discordant counts, the number of inputs and the p-value."""

    only_a: int  # inputs a classifies right and b wrong
    only_b: int  # the reverse
    n: int  # inputs compared
    p: float  # exact two-sided McNemar (binomial) p-value

    def __str__(self) -> str:
        return f"{self.only_a} vs {self.only_b} of {self.n} inputs right in one only (exact McNemar p = {self.p:.2g})"


def mcnemar_test(a_correct: Iterable[bool], b_correct: Iterable[bool]) -> PairedResult:
    """Exact two-sided McNemar test of two classifiers on the same inputs, given whether each got
    each input right: under equal accuracy, the inputs where exactly one is right split 1:1."""
    a, b = [bool(x) for x in a_correct], [bool(x) for x in b_correct]
    if len(a) != len(b):
        raise ValueError(f"the two classifiers must be scored on the same inputs: got {len(a)} and {len(b)} results")
    only_a = sum(x and not y for x, y in zip(a, b, strict=True))
    only_b = sum(y and not x for x, y in zip(a, b, strict=True))
    discordant = only_a + only_b
    tail = sum(math.comb(discordant, k) for k in range(min(only_a, only_b) + 1))  # exact integers
    p = min(1.0, float(Fraction(2 * tail, 2**discordant)))
    return PairedResult(only_a=only_a, only_b=only_b, n=len(a), p=p)
