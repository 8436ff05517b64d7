"""Confidence intervals and paired comparisons that respect that one shopper's events are not
independent, that clients may be few, and that several models are compared at once (pure
Python, no numpy).

**Clusters.** Events are grouped per client (offline) or per group of clients (live grading):
the cluster. An accuracy is a ratio estimator ``p = sum(y_i) / sum(n_i)`` over clusters ``i``
(``y_i`` correct events, ``n_i`` events), whose cluster-robust (sandwich, linearisation, CR1)
variance is

    V = K / (K - 1) * sum((y_i - p * n_i) ** 2) / sum(n_i) ** 2

with ``K`` the clusters with at least one event.

**Few clusters.** The interval is ``p ± t(K-1) sqrt(V)``, with the quantile of Student's t with
``K - 1`` degrees of freedom instead of the normal's: the usual small-sample correction of
cluster-robust inference (Cameron & Miller 2015, §VI), which is the normal interval when
clusters are many and widens it when they are few (t(9) = 2.26 against 1.96 for ten clients).
It is clipped to [0, 1]. With one cluster there is no between-cluster variability to estimate:
the interval is [0, 1]. Below :data:`FRAGILE_BELOW` clusters the verdicts are said to be fragile.

**Two models on the same events.** Per cluster, ``d_i`` = correct events of one model minus
correct events of the other, and the difference of accuracies ``D = sum(d_i) / sum(n_i)`` with
the same sandwich variance (``d_i - D n_i``) and a two-sided t-test of ``D = 0`` with ``K - 1``
degrees of freedom. This is the clustered McNemar test of Obuchowski (1998): only discordant
events contribute to ``d_i``, and a cluster's discordances are summed before squaring, so a
shopper who counts many times does not count as many shoppers.

**Several models.** Comparing each model with the best *of the same data* is two choices at
once: which model is best, and which differences are real. :func:`compare_all_pairs` tests
every pair of models and adjusts the p-values for the number of pairs with Holm's step-down
method (Holm 1979), which holds the chance of any false "behind" at 5% whatever the best turns
out to be (the pair "model, data-picked best" is one of the pairs tested). Each difference's
interval is simultaneous over the same pairs (Bonferroni: level ``1 - 0.05 / pairs``), so all
the intervals shown hold together; Holm's step-down can call a difference real a little before
its simultaneous interval leaves zero, never the other way round.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from genderd.evaluation.report import Interval

#: the level of every test, and 1 - the confidence of every interval
ALPHA = 0.05
#: two-sided 95% quantile of the standard normal distribution
Z_95 = 1.959963984540054
#: fewer clusters than this, and the verdicts are said to be fragile
FRAGILE_BELOW = 30
#: above this many degrees of freedom, Student's t is the normal distribution to 1e-6
_NORMAL_DF = 1_000_000
#: the continued fraction of the incomplete beta function: its precision and iteration cap
_CF_EPSILON = 1e-15
_CF_ITERATIONS = 10_000
_TINY = 1e-300
#: the bisection of a quantile: the bracket and the steps (2^-80 of the bracket: exact)
_QUANTILE_HIGH = 1e6
_QUANTILE_STEPS = 80

COMPARISON_METHOD = (
    "paired difference of accuracy over all events, per-client sums, cluster-robust (CR1 "
    "sandwich) variance, two-sided t-test with clients - 1 degrees of freedom (clustered "
    "McNemar, Obuchowski 1998); p-values adjusted over every pair of models (Holm 1979); "
    "intervals simultaneous over the same pairs (Bonferroni)"
)


# -- Student's t -----------------------------------------------------------------------------
def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularised incomplete beta function (modified Lentz)."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    fraction = d
    for m in range(1, _CF_ITERATIONS + 1):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            fraction *= c * d
        if abs(c * d - 1.0) < _CF_EPSILON:
            break
    return fraction


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)``, for ``0 <= x <= 1``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    # the fraction converges fast below the mean; above it, by symmetry
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def normal_two_sided_p(z: float) -> float:
    """P(|Z| >= |z|) for a standard normal Z."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's T with ``df`` degrees of freedom (> 0)."""
    if math.isinf(t):
        return 0.0
    if df >= _NORMAL_DF:
        return normal_two_sided_p(t)
    return incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


@functools.lru_cache(maxsize=256)
def t_quantile(alpha: float, df: float) -> float:
    """The ``t`` with ``P(|T| >= t) = alpha`` (two-sided) for Student's T with ``df`` degrees
    of freedom: 1.96 for alpha 0.05 and many degrees, 2.26 for 9."""
    low, high = 0.0, _QUANTILE_HIGH
    for _ in range(_QUANTILE_STEPS):
        middle = (low + high) / 2.0
        if t_two_sided_p(middle, df) > alpha:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


# -- intervals -------------------------------------------------------------------------------
def ratio(numerators: Sequence[float], denominators: Sequence[int]) -> float | None:
    """``sum(numerators) / sum(denominators)``, None when the denominators sum to 0."""
    total = sum(denominators)
    return None if total == 0 else sum(numerators) / total


def clusters_of(denominators: Sequence[int]) -> int:
    """The clusters with at least one event."""
    return sum(1 for n in denominators if n)


def _sandwich_se(
    numerators: Sequence[float], denominators: Sequence[int], estimate: float
) -> tuple[float, int]:
    """The cluster-robust standard error of the ratio ``estimate`` (see the module) and the
    clusters it rests on; infinite below two clusters."""
    total = 0
    clusters = 0
    squares = 0.0
    for y, n in zip(numerators, denominators, strict=True):
        if n:
            clusters += 1
            total += n
            squares += (y - estimate * n) ** 2
    if clusters < 2:
        return math.inf, clusters
    return math.sqrt(clusters / (clusters - 1) * squares) / total, clusters


def clustered_interval(
    correct: Sequence[int], events: Sequence[int], *, alpha: float = ALPHA
) -> Interval | None:
    """The ``1 - alpha`` interval of the accuracy ``sum(correct) / sum(events)``, one entry
    per cluster (ratio estimator, sandwich variance, t with clusters - 1 degrees of freedom);
    None when there are no events."""
    estimate = ratio(correct, events)
    if estimate is None:
        return None
    se, clusters = _sandwich_se(correct, events, estimate)
    if math.isinf(se):
        return Interval(0.0, 1.0)
    half = t_quantile(alpha, clusters - 1) * se
    return Interval(max(0.0, estimate - half), min(1.0, estimate + half))


def binomial_interval(correct: int, events: int, *, z: float = Z_95) -> Interval | None:
    """The naive (Wald) interval that takes every event as independent: a reference that
    :func:`clustered_interval` is wider than when a client's events are correlated."""
    if events == 0:
        return None
    p = correct / events
    half = z * math.sqrt(p * (1 - p) / events)
    return Interval(max(0.0, p - half), min(1.0, p + half))


def wilson_interval(successes: int, trials: int, *, z: float = Z_95) -> Interval | None:
    """Wilson's score interval of a proportion of independent trials (one per client, as
    with known labels): unlike Wald's, it stays inside [0, 1] and holds for few trials."""
    if trials == 0:
        return None
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


# -- paired comparisons ----------------------------------------------------------------------
@dataclass(frozen=True)
class Paired:
    """One model against another on the same events (see the module)."""

    difference: float  # accuracy of the first minus accuracy of the second
    interval: Interval  # at the level asked for (simultaneous when adjusted)
    p_value: float  # two-sided, not adjusted
    clusters: int  # clusters with events


def paired_difference(
    correct: Sequence[int],
    correct_other: Sequence[int],
    events: Sequence[int],
    *,
    alpha: float = ALPHA,
) -> Paired:
    """The difference of accuracies over the same events (``correct`` minus ``correct_other``
    per cluster, over ``events`` per cluster), its ``1 - alpha`` interval and two-sided
    p-value (t with clusters - 1 degrees of freedom). Without events: 0, [0, 0], p = 1."""
    diffs = [a - b for a, b in zip(correct, correct_other, strict=True)]
    estimate = ratio(diffs, events)
    if estimate is None:
        return Paired(0.0, Interval(0.0, 0.0), 1.0, 0)
    se, clusters = _sandwich_se(diffs, events, estimate)
    if math.isinf(se):
        return Paired(estimate, Interval(-1.0, 1.0), 1.0, clusters)
    if se == 0.0:  # no discordance varies between clusters
        p_value = 1.0 if estimate == 0 else 0.0
        return Paired(estimate, Interval(estimate, estimate), p_value, clusters)
    df = clusters - 1
    half = t_quantile(alpha, df) * se
    p_value = t_two_sided_p(estimate / se, df)
    return Paired(estimate, Interval(estimate - half, estimate + half), p_value, clusters)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: the adjusted p-values, in the order given. A hypothesis is
    rejected at level ``alpha`` when its adjusted p-value is below ``alpha``; the chance of any
    false rejection is at most ``alpha`` (Holm 1979)."""
    family = len(p_values)
    adjusted = [1.0] * family
    running = 0.0
    for rank, index in enumerate(sorted(range(family), key=p_values.__getitem__)):
        running = max(running, min(1.0, (family - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


@dataclass(frozen=True)
class PairVerdict:
    """A row against the reference row, adjusted for every pair of rows compared."""

    paired: Paired  # the difference (row minus reference), its simultaneous interval, raw p
    p_adjusted: float  # Holm over every pair of rows
    behind: bool  # significantly behind the reference after adjustment


def compare_all_pairs(
    correct: Sequence[Sequence[int]], events: Sequence[int], reference: int
) -> list[PairVerdict | None]:
    """Every row (``correct[i]``: correct events per cluster) against the row ``reference``
    (the data-picked best), each p-value adjusted by Holm over *every pair* of rows, each
    interval simultaneous over them (see the module); None for the reference itself. A row
    is ``behind`` only when its difference is negative and its adjusted p-value below
    :data:`ALPHA`."""
    rows = len(correct)
    pairs = [(i, j) for i in range(rows) for j in range(i + 1, rows)]
    raw = [paired_difference(correct[i], correct[j], events).p_value for i, j in pairs]
    adjusted = dict(zip(pairs, holm(raw), strict=True))
    level = ALPHA / max(1, len(pairs))
    verdicts: list[PairVerdict | None] = []
    for i in range(rows):
        if i == reference:
            verdicts.append(None)
            continue
        paired = paired_difference(correct[i], correct[reference], events, alpha=level)
        p_adjusted = adjusted[(min(i, reference), max(i, reference))]
        behind = paired.difference < 0 and p_adjusted < ALPHA
        verdicts.append(PairVerdict(paired, p_adjusted, behind))
    return verdicts


__all__ = [
    "ALPHA",
    "COMPARISON_METHOD",
    "FRAGILE_BELOW",
    "Z_95",
    "PairVerdict",
    "Paired",
    "binomial_interval",
    "clustered_interval",
    "clusters_of",
    "compare_all_pairs",
    "holm",
    "incomplete_beta",
    "normal_two_sided_p",
    "paired_difference",
    "ratio",
    "t_quantile",
    "t_two_sided_p",
    "wilson_interval",
]
