"""Confidence intervals and paired comparisons that respect that one shopper's events are not
independent (pure Python, no numpy).

Events are grouped per client (the cluster). An accuracy is a ratio estimator
``p = sum(y_i) / sum(n_i)`` over clients ``i`` (``y_i`` correct events, ``n_i`` events), whose
cluster-robust (sandwich, linearisation) variance is

    V = K / (K - 1) * sum((y_i - p * n_i) ** 2) / sum(n_i) ** 2

with ``K`` the clients with at least one event; the 95% interval is ``p ± 1.96 sqrt(V)`` (Wald),
clipped to [0, 1]. With one client there is no between-client variability to estimate: the
interval is [0, 1].

Two models compared on the same events: per client, ``d_i`` = correct events of the model
minus correct events of the best one, and the difference of accuracies
``D = sum(d_i) / sum(n_i)`` with the same sandwich variance (``d_i - D n_i``); a two-sided
z-test of ``D = 0`` (the normal CDF via ``math.erfc``). This is the clustered McNemar test of
Obuchowski (1998): only discordant events contribute to ``d_i``, and a client's discordances are
summed before squaring, so a shopper who counts many times does not count as many shoppers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from genderd.evaluation.report import Interval

#: two-sided 95% quantile of the standard normal distribution
Z_95 = 1.959963984540054
#: the paired comparison's level
ALPHA = 0.05

COMPARISON_METHOD = (
    "paired difference of accuracy over all events, per-client sums, cluster-robust "
    "(sandwich) variance, two-sided z-test (clustered McNemar, Obuchowski 1998)"
)


def ratio(numerators: Sequence[float], denominators: Sequence[int]) -> float | None:
    """``sum(numerators) / sum(denominators)``, None when the denominators sum to 0."""
    total = sum(denominators)
    return None if total == 0 else sum(numerators) / total


def _sandwich_se(
    numerators: Sequence[float], denominators: Sequence[int], estimate: float
) -> float:
    """The cluster-robust standard error of the ratio ``estimate`` (see the module)."""
    total = 0
    clusters = 0
    squares = 0.0
    for y, n in zip(numerators, denominators, strict=True):
        if n:
            clusters += 1
            total += n
            squares += (y - estimate * n) ** 2
    if clusters < 2:
        return math.inf
    return math.sqrt(clusters / (clusters - 1) * squares) / total


def clustered_interval(
    correct: Sequence[int], events: Sequence[int], *, z: float = Z_95
) -> Interval | None:
    """The 95% interval of the accuracy ``sum(correct) / sum(events)``, one entry per client,
    clustered by client (ratio estimator, sandwich variance); None when there are no events."""
    estimate = ratio(correct, events)
    if estimate is None:
        return None
    se = _sandwich_se(correct, events, estimate)
    if math.isinf(se):
        return Interval(0.0, 1.0)
    return Interval(max(0.0, estimate - z * se), min(1.0, estimate + z * se))


def binomial_interval(correct: int, events: int, *, z: float = Z_95) -> Interval | None:
    """The naive (Wald) interval that takes every event as independent: a reference that
    :func:`clustered_interval` is wider than when a client's events are correlated."""
    if events == 0:
        return None
    p = correct / events
    half = z * math.sqrt(p * (1 - p) / events)
    return Interval(max(0.0, p - half), min(1.0, p + half))


def normal_two_sided_p(z: float) -> float:
    """P(|Z| >= |z|) for a standard normal Z."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def paired_difference(
    correct: Sequence[int], correct_best: Sequence[int], events: Sequence[int]
) -> tuple[float, Interval, float]:
    """The difference of accuracies over the same events (``correct`` minus ``correct_best``
    per client, over ``events`` per client), its 95% interval and two-sided p-value, clustered
    by client (see the module). Without events: (0.0, [0, 0], 1.0)."""
    diffs = [a - b for a, b in zip(correct, correct_best, strict=True)]
    estimate = ratio(diffs, events)
    if estimate is None:
        return 0.0, Interval(0.0, 0.0), 1.0
    se = _sandwich_se(diffs, events, estimate)
    if math.isinf(se):
        return estimate, Interval(-1.0, 1.0), 1.0
    if se == 0.0:  # no discordance varies between clients
        return estimate, Interval(estimate, estimate), 1.0 if estimate == 0 else 0.0
    p_value = normal_two_sided_p(estimate / se)
    return estimate, Interval(estimate - Z_95 * se, estimate + Z_95 * se), p_value


__all__ = [
    "ALPHA",
    "COMPARISON_METHOD",
    "Z_95",
    "binomial_interval",
    "clustered_interval",
    "normal_two_sided_p",
    "paired_difference",
    "ratio",
]
