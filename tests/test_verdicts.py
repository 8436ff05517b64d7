"""`genderd evaluate`'s verdicts hold when several models are compared and clients are few
(issue 25, SPEC §11), on synthetic datasets whose truth is known (tests/support/verdicts.py).

``pytest tests/test_verdicts.py -s`` prints the counts that docs/choose-a-model.md quotes.
The seeds are fixed: every run checks the same 120 datasets.
"""

from __future__ import annotations

import pytest

from .support.verdicts import CHECKS, Counts, run

SEED = 1000
#: the most datasets out of 40 that may show a '*' between equal models (10%)
FALSE_ALARMS = 4
#: the least share of intervals that must cover the truth
COVERAGE = 0.90


@pytest.fixture(scope="module")
def counts() -> dict[str, Counts]:
    found = {title: run(title, n, clients, edges, SEED) for title, n, clients, edges in CHECKS}
    for title, count in found.items():
        print(count.line(title))
    return found


def _covered(count: Counts) -> None:
    assert count.accuracy_covered >= COVERAGE * count.accuracy_intervals
    assert count.difference_covered >= COVERAGE * count.difference_intervals


def test_four_equal_models_are_rarely_told_apart(counts: dict[str, Counts]) -> None:
    count = counts["four equal models, 300 clients"]
    assert count.with_star <= FALSE_ALARMS and count.fragile == 0
    _covered(count)


def test_ten_clients_are_said_fragile_and_rarely_told_apart(counts: dict[str, Counts]) -> None:
    count = counts["two equal models, 10 clients"]
    assert count.fragile == count.datasets
    assert count.with_star <= FALSE_ALARMS
    _covered(count)


def test_a_real_ten_point_gap_is_found_every_time(counts: dict[str, Counts]) -> None:
    count = counts["a 10-point gap, 300 clients"]
    assert count.with_star == count.datasets
    _covered(count)
