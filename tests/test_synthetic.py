"""Synthetic traffic (`genderd produce`, `up --demo`): shoppers whose interest differs over time.

Pure: no server. The mix and the behaviour tested here are what docs/running.md describes.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from genderd.clock import MS_PER_DAY
from genderd.producer import (
    DRIFT_PERIOD_MS,
    SHOPPER_KINDS,
    SHOPPER_SHARES,
    VIEW_GAP_MS,
    shopper,
    synthetic,
)

from .support.runtime import FakeClock

GENDERS = ("female", "male", "kids")
NOW_MS = 1_800_000_000_000


def sessions(events: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """History events as yielded, cut into runs of one client's views 10 s to 3 min apart."""
    low, high = VIEW_GAP_MS
    run: list[dict[str, Any]] = []
    for event in events:
        if run and not (
            event["cid"] == run[-1]["cid"] and low <= event["ts"] - run[-1]["ts"] <= high
        ):
            yield run
            run = []
        run.append(event)
    if run:
        yield run


def kind_of(cid: str, seed: int | None) -> str:
    return shopper(int(cid[1:]), GENDERS, seed).kind


def test_same_seed_and_clock_give_the_same_events() -> None:
    clock = FakeClock(NOW_MS)
    for days in (0, 3):
        first = list(synthetic(2_000, 100, GENDERS, days=days, seed=1, clock=clock))
        assert first == list(synthetic(2_000, 100, GENDERS, days=days, seed=1, clock=clock))
        assert first != list(synthetic(2_000, 100, GENDERS, days=days, seed=2, clock=clock))
        assert len(first) == 2_000
        assert {e["gender"] for e in first} == set(GENDERS)
        assert {e["cid"] for e in first} <= {f"C{n}" for n in range(1, 101)}
    # a shopper's kind depends on its number and the seed only (an unseeded run: seed 0)
    assert shopper(7, GENDERS, None) == shopper(7, GENDERS, 0)


@pytest.mark.parametrize("seed", [None, 1, 12345])
def test_the_mix_of_shoppers_is_the_documented_one(seed: int | None) -> None:
    clients = 20_000
    kinds = Counter(shopper(n, GENDERS, seed).kind for n in range(1, clients + 1))
    for kind, share in zip(SHOPPER_KINDS, SHOPPER_SHARES, strict=True):
        assert abs(kinds[kind] / clients - share) < 0.015, kinds
    firsts = Counter(shopper(n, GENDERS, seed).first for n in range(1, clients + 1))
    assert all(abs(firsts[g] / clients - 1 / 3) < 0.015 for g in GENDERS), firsts


def test_loyal_shoppers_mostly_view_their_department() -> None:
    events = list(synthetic(30_000, 300, GENDERS, days=10, seed=4, clock=FakeClock(NOW_MS)))
    loyal = [e for e in events if kind_of(e["cid"], 4) == "loyal"]
    hits = sum(e["gender"] == shopper(int(e["cid"][1:]), GENDERS, 4).first for e in loyal)
    assert 0.77 < hits / len(loyal) < 0.83


def test_a_drifting_shopper_moves_from_one_department_to_the_next() -> None:
    clock = FakeClock(NOW_MS)
    events = list(synthetic(40_000, 400, GENDERS, days=10, seed=3, clock=clock))
    before: Counter[bool] = Counter()
    after: Counter[bool] = Counter()
    drifting = 0
    for cid, views in group_by_client(events).items():
        s = shopper(int(cid[1:]), GENDERS, 3)
        if s.kind != "drifting":
            continue
        drifting += 1
        switch = s.last_switch_ms(NOW_MS)
        # a 10-day history holds exactly one move, from the previous department to the next
        assert NOW_MS - DRIFT_PERIOD_MS < switch <= NOW_MS
        old, new = s.department_at(switch - 1), s.department_at(switch)
        assert old != new and GENDERS.index(new) == (GENDERS.index(old) + 1) % len(GENDERS)
        for e in views:
            if e["ts"] < switch:
                before[e["gender"] == old] += 1
            else:
                after[e["gender"] == new] += 1
    assert drifting > 80
    assert 0.77 < before[True] / before.total() < 0.83
    assert 0.77 < after[True] / after.total() < 0.83


def group_by_client(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_client: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_client[e["cid"]].append(e)
    return by_client


def test_history_comes_in_sessions_a_browsing_shopper_keeps_within_one() -> None:
    clock = FakeClock(NOW_MS)
    events = list(synthetic(30_000, 300, GENDERS, days=10, seed=5, clock=clock))
    runs = list(sessions(events))
    lengths = Counter(len(run) for run in runs)
    # a session's 1 to 7 views are yielded together, 10 s to 3 min apart
    assert set(lengths) <= set(range(1, 8)) and 3.8 < len(events) / len(runs) < 4.2
    # several sessions per client, spread over the days
    per_client = Counter(run[0]["cid"] for run in runs)
    assert sum(per_client.values()) / len(per_client) > 15
    browsing = [run for run in runs if kind_of(run[0]["cid"], 5) == "browsing" and len(run) > 2]
    within = sum(Counter(e["gender"] for e in run).most_common(1)[0][1] for run in browsing)
    assert within / sum(len(run) for run in browsing) > 0.85
    # across sessions the department changes: the next session's majority is a fresh draw
    majority: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for run in browsing:
        majority[run[0]["cid"]].append(
            (run[0]["ts"], Counter(e["gender"] for e in run).most_common(1)[0][0])
        )
    pairs = [
        (a[1], b[1])
        for found in majority.values()
        for a, b in zip(sorted(found), sorted(found)[1:], strict=False)
    ]
    same = sum(a == b for a, b in pairs) / len(pairs)
    assert 0.2 < same < 0.5  # 1/3 with three departments


def test_history_times_stay_within_the_last_days_and_never_ahead_of_the_clock() -> None:
    for days in (1, 3, 10):
        clock = FakeClock(NOW_MS + days)
        for e in synthetic(5_000, 50, GENDERS, days=days, seed=days, clock=clock):
            assert clock.now_ms - days * MS_PER_DAY < e["ts"] <= clock.now_ms


def test_live_traffic_follows_the_clock() -> None:
    """days=0: no ts (arrival time); a drifting shopper drifts by the clock's time."""
    clock = FakeClock(NOW_MS)
    events = synthetic(None, 400, GENDERS, seed=6, clock=clock)
    for at in (NOW_MS, NOW_MS + DRIFT_PERIOD_MS // 2, NOW_MS + DRIFT_PERIOD_MS):
        clock.now_ms = at
        hits: Counter[bool] = Counter()
        for _, e in zip(range(20_000), events, strict=False):
            assert set(e) == {"cid", "gender"}
            s = shopper(int(e["cid"][1:]), GENDERS, 6)
            if s.kind == "drifting":
                hits[e["gender"] == s.department_at(at)] += 1
        assert 0.77 < hits[True] / hits.total() < 0.83, at
    # half a period later, about half of the drifting shoppers are in another department
    drifting = [s for n in range(1, 401) if (s := shopper(n, GENDERS, 6)).kind == "drifting"]
    moved = sum(
        s.department_at(NOW_MS) != s.department_at(NOW_MS + DRIFT_PERIOD_MS // 2) for s in drifting
    )
    assert 0.35 < moved / len(drifting) < 0.65


def test_live_traffic_comes_in_bursts_per_client() -> None:
    """Live sessions: a client's views mostly arrive close together (within its session),
    then the client is quiet for a long while."""
    events = list(synthetic(50_000, 1_000, GENDERS, seed=8, clock=FakeClock(NOW_MS)))
    positions: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(events):
        positions[e["cid"]].append(i)
    gaps = [b - a for found in positions.values() for a, b in itertools.pairwise(found)]
    # 64 open sessions: a session's next view comes about 64 events later; a client's next
    # session about 1,000 sessions (some 4,000 events) later
    short = sum(gap < 500 for gap in gaps) / len(gaps)
    assert 0.6 < short < 0.85


def test_an_anchored_shopper_moves_at_the_same_times_relative_to_the_anchor() -> None:
    """Issue 28: the demo's history and live traffic are anchored at the start of the day, so
    that a drifting shopper's moves (and so the history) are the same whatever the day."""
    anchor = NOW_MS - NOW_MS % MS_PER_DAY
    for days in (1, 3, 10, 17):
        later = anchor + days * MS_PER_DAY
        for n in range(1, 200):
            s, t = shopper(n, GENDERS, 5, anchor), shopper(n, GENDERS, 5, later)
            assert (s.kind, t.kind) == (shopper(n, GENDERS, 5).kind,) * 2
            if s.kind != "drifting":
                assert s == t
                continue
            assert s.last_switch_ms(anchor) - anchor == t.last_switch_ms(later) - later
            for offset in (-9 * MS_PER_DAY, -MS_PER_DAY, 0, 3 * MS_PER_DAY):
                assert s.department_at(anchor + offset) == t.department_at(later + offset)


def test_anchored_live_traffic_drifts_as_the_anchored_history_does() -> None:
    anchor = NOW_MS - NOW_MS % MS_PER_DAY
    history = list(synthetic(20_000, 200, GENDERS, days=10, seed=6, anchor_ms=anchor))
    assert all(anchor - 10 * MS_PER_DAY <= e["ts"] < anchor for e in history)
    clock = FakeClock(anchor + MS_PER_DAY // 2)
    live = list(synthetic(20_000, 200, GENDERS, seed=6, clock=clock, anchor_ms=anchor))
    # both follow the same anchored shoppers: 80% of a drifting shopper's views in its
    # department at the view's time (the history's ts, the live traffic's clock)
    for events, at in ((history, None), (live, clock.now_ms)):
        hits: Counter[bool] = Counter()
        for event in events:
            s = shopper(int(event["cid"][1:]), GENDERS, 6, anchor)
            if s.kind == "drifting":
                hits[event["gender"] == s.department_at(event["ts"] if at is None else at)] += 1
        assert 0.77 < hits[True] / hits.total() < 0.83, hits
