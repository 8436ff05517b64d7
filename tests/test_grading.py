"""Live grading in the workers (SPEC §14): each event applied is graded once against the
model's answer just before it, read at the event's time, in the same atomic call; late events,
replays and re-driven entries are not graded.

The expected counts come from a reference written here (each model's answer, per client, in
arrival order); the live ones from the grades hashes the workers wrote.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from genderd.clock import MS_PER_DAY
from genderd.deployment import Deployment
from genderd.grading.live import read_window
from genderd.grading.plan import client_group, hour_of
from genderd.keys import Keys, shard_of
from genderd.settings import Settings
from genderd.transport import Links

from .support.factories import make_worker
from .support.runtime import FakeClock, Loop

MINUTE = 60_000
MAX_DELAY_MS = 300_000
# a PythonModel, a TopWindow, and the example package's Lua-backed model that grades
PLUGINS = "tests.support.pymodels:Count,tests.support.pymodels:Top3,genderd_first.model:First"
MODELS = ("last", "top", "top7d", "count", "top3d", "first")
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "lua-model"
WINDOWS = {"top7d": 7, "top3d": 3}
GENDERS = ("female", "kids", "male")


@dataclass(frozen=True)
class Ev:
    cid: str
    gender: str
    ts: int
    arrival: int  # the entry id's ms


@dataclass
class Tally:
    graded: int = 0
    predicted: int = 0
    correct: int = 0

    def add(self, prediction: str | None, truth: str) -> None:
        self.graded += 1
        if prediction is not None:
            self.predicted += 1
            self.correct += prediction == truth

    def counts(self) -> tuple[int, int, int]:
        return self.graded, self.predicted, self.correct


def _top(events: Sequence[Ev]) -> str | None:
    """Most events; ties to the newest event, then the smallest name."""
    counts: dict[str, int] = {}
    newest: dict[str, int] = {}
    for e in events:
        counts[e.gender] = counts.get(e.gender, 0) + 1
        newest[e.gender] = max(newest.get(e.gender, 0), e.ts)
    if not counts:
        return None
    return min(counts, key=lambda g: (-counts[g], -newest[g], g))


class Reference:
    """Every model's answer for one client as the workers keep it, events applied in arrival
    order at a processing time ``now``."""

    def __init__(self) -> None:
        self.applied: list[Ev] = []
        self.counted: dict[str, list[Ev]] = {model: [] for model in WINDOWS}
        self.count_answer: str | None = None

    def predict(self, model: str, ev: Ev) -> str | None:
        if model == "last":
            newest = max(self.applied, key=lambda e: (e.ts, e.arrival), default=None)
            return None if newest is None else newest.gender
        if model == "top":
            return _top(self.applied)
        if model == "count":
            return self.count_answer
        if model == "first":
            earliest = min(self.applied, key=lambda e: (e.ts, e.arrival), default=None)
            return None if earliest is None else earliest.gender
        day, window = ev.ts // MS_PER_DAY, WINDOWS[model]
        return _top([e for e in self.counted[model] if day - window < e.ts // MS_PER_DAY <= day])

    def apply(self, ev: Ev, now: int) -> None:
        self.applied.append(ev)
        for model, window in WINDOWS.items():  # older than the window when processed: dropped
            if ev.ts // MS_PER_DAY > now // MS_PER_DAY - window:
                self.counted[model].append(ev)
        self.count_answer = "female" if len(self.applied) % 2 == 0 else "male"


def expected(
    events: Sequence[Ev], now: int, references: dict[str, Reference], tallies: dict[str, Tally]
) -> None:
    """Grade ``events`` (in arrival order) as the workers should, processed at ``now``."""
    for ev in sorted(events, key=lambda e: e.arrival):
        reference = references.setdefault(ev.cid, Reference())
        if ev.arrival - ev.ts <= MAX_DELAY_MS:
            for model in MODELS:
                tallies[model].add(reference.predict(model, ev), ev.gender)
        reference.apply(ev, now)


def write(sync_redis: redis.Redis, settings: Settings, events: Sequence[Ev]) -> None:
    """XADD ``events`` with ids of their arrival times (increasing per stream)."""
    keys, seq = Keys(settings.prefix), 0
    for ev in sorted(events, key=lambda e: e.arrival):
        seq += 1
        stream = keys.stream(shard_of(ev.cid, settings.shards))
        fields = {"cid": ev.cid, "gender": ev.gender, "ts": ev.ts}
        sync_redis.xadd(stream, fields, id=f"{ev.arrival}-{seq}")  # type: ignore[arg-type]


def process(aio: Loop, clock: FakeClock, models: Sequence[str] = MODELS) -> dict[str, Tally]:
    """Every model's worker drains the streams at ``clock``'s time: what they graded."""
    graded = {}
    for model in models:
        worker = make_worker(aio.client, model, aio.settings, clock=clock)
        aio.run(worker.ensure_groups())
        aio.run(worker.drain())
        totals = worker.totals
        graded[model] = Tally(totals.graded, totals.predicted, totals.correct)
    return graded


def live(
    aio: Loop, clock: FakeClock, window_s: int = 7 * 86_400
) -> dict[str, tuple[int, int, int]]:
    """The grades hashes' counts per model over a window ending at ``clock``."""
    deployment = Deployment.build(aio.settings, clock)
    window = aio.run(
        read_window(Links.over(aio.client).fast, deployment, MODELS, window_s, clock.now_ms)
    )
    counts = {}
    for model in MODELS:
        own = window.grades[model].values()
        counts[model] = (
            sum(c[0] for c in own),
            sum(c[1] for c in own),
            sum(c[2] for c in own),
        )
    return counts


def traffic(rnd: random.Random, clients: int, start: int, span_ms: int) -> list[Ev]:
    """Clients who mostly keep to one department; each event arrives 0 to 4 minutes after its
    time (so arrivals are out of time order), one in ten 6 minutes or more (not graded)."""
    events = []
    for c in range(clients):
        home = rnd.choice(GENDERS)
        for _ in range(rnd.randint(1, 12)):
            ts = start + rnd.randrange(span_ms)
            late = rnd.random() < 0.1
            delay = rnd.randrange(6 * MINUTE, 20 * MINUTE) if late else rnd.randrange(4 * MINUTE)
            gender = home if rnd.random() < 0.7 else rnd.choice(GENDERS)
            events.append(Ev(f"g{c}", gender, ts, ts + delay))
    return events


@pytest.fixture
def graded_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"plugins": tuple(PLUGINS.split(","))})


@pytest.fixture
def gaio(graded_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Loop:
    monkeypatch.syspath_prepend(str(EXAMPLE))  # genderd_first, as if installed
    loop = Loop(graded_settings)
    yield loop  # type: ignore[misc]
    loop.close()


def test_each_event_is_graded_once_against_the_answer_before_it(
    gaio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    rnd = random.Random(26)
    references: dict[str, Reference] = {}
    want = {model: Tally() for model in MODELS}
    # traffic of 4 days ago, processed then; then the last two hours', processed now: the
    # windowed models' stored counters are stale, and top3d's window has left the first part
    yesterday = FakeClock(clock.now_ms - 4 * MS_PER_DAY)
    first = traffic(rnd, 40, yesterday.now_ms - 3_600_000, 3_000_000)
    write(sync_redis, gaio.settings, first)
    expected(first, yesterday.now_ms, references, want)
    got = process(gaio, yesterday)
    second = traffic(rnd, 40, clock.now_ms - 7_200_000, 6_600_000)
    write(sync_redis, gaio.settings, second)
    expected(second, clock.now_ms, references, want)
    for model, tally in process(gaio, clock).items():
        got[model] = Tally(
            *(a + b for a, b in zip(got[model].counts(), tally.counts(), strict=True))
        )

    assert {m: t.counts() for m, t in got.items()} == {m: t.counts() for m, t in want.items()}
    assert live(gaio, clock) == {m: t.counts() for m, t in want.items()}
    assert all(t.graded > 100 and t.correct > 0 for t in want.values())
    assert want["top3d"].counts() != want["top"].counts()  # the window shows


def test_a_windowed_answer_is_read_at_the_events_time_across_midnight(
    gaio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    # processed 2 minutes after midnight: an event of 23:58 yesterday is graded in
    # yesterday's window, whose oldest day today's no longer holds
    midnight = clock.day * MS_PER_DAY
    now = FakeClock(midnight + 2 * MINUTE)
    old_day = midnight - 7 * MS_PER_DAY + MINUTE  # in yesterday's 7-day window, not today's
    events = [
        Ev("m1", "kids", old_day, old_day + MINUTE),
        Ev("m1", "kids", old_day + 1000, old_day + MINUTE + 1),
        Ev("m1", "male", midnight - 2 * MINUTE, midnight + MINUTE),
        Ev("m1", "kids", midnight - MINUTE, midnight + MINUTE + 1),  # yesterday: kids 2, male 1
        Ev("m1", "male", midnight + MINUTE, midnight + MINUTE + 2),  # today: male 1, kids 1
    ]
    write(sync_redis, gaio.settings, events[:2])
    process(gaio, FakeClock(old_day + 2 * MINUTE), ["top7d"])
    write(sync_redis, gaio.settings, events[2:])
    got = process(gaio, now, ["top7d"])["top7d"]
    # male at 23:58 (predicted kids: wrong), kids at 23:59 (kids: right), male at 00:01 (the
    # window of today: male 1 and kids 1, kids newer: wrong)
    assert got.counts() == (3, 3, 1)


def test_a_deferred_client_gets_todays_window_so_it_is_deferred_once_a_day(
    gaio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    yesterday = FakeClock(clock.now_ms - MS_PER_DAY)
    write(
        sync_redis, gaio.settings, [Ev("s1", "kids", yesterday.now_ms - MINUTE, yesterday.now_ms)]
    )
    process(gaio, yesterday, ["top7d"])
    keys = Keys(gaio.settings.prefix)
    result = keys.result(shard_of("s1", gaio.settings.shards), "s1")
    assert sync_redis.hget(result, "top7d:w") == f"{yesterday.day},7".encode()

    write(sync_redis, gaio.settings, [Ev("s1", "male", clock.now_ms - MINUTE, clock.now_ms)])
    got = process(gaio, clock, ["top7d"])["top7d"]
    assert got.counts() == (1, 1, 0)  # predicted kids (yesterday's, in today's window): wrong
    # the deferred call stored today's counters, as a lookup would: the next batches add to them
    assert sync_redis.hget(result, "top7d:w") == f"{clock.day},7".encode()
    assert sync_redis.hget(result, "top7d") == b"male"  # kids 1, male 1: male is newer
    assert sync_redis.hget(result, "top7d:u") == str((clock.day + 1) * MS_PER_DAY).encode()


def test_a_grades_field_that_is_not_three_counts_is_counted_afresh(
    gaio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    """A grades hash's field holding something else (written by hand, or cut short) is
    replaced by the call's own counts: grading goes on, and the events are applied."""
    settings, start = gaio.settings, clock.now_ms - 2 * MINUTE
    events = [Ev("z1", "male", start + i * 1000, start + i * 1000 + 500) for i in range(3)]
    assert len({hour_of(ev.ts) for ev in events}) == 1
    group = client_group("z1", settings.shards)
    field = chr(48 + group // 64) + chr(48 + group % 64)
    key = Keys(settings.prefix).grades(shard_of("z1", settings.shards), "last", hour_of(start))
    sync_redis.hset(key, field, "not three counts")
    write(sync_redis, settings, events)
    got = process(gaio, clock, ["last"])["last"]
    assert got.counts() == (3, 2, 2)  # the first has no answer before it; then male, right
    assert sync_redis.hget(key, field) == b"3 2 2"


def test_a_client_with_over_a_thousand_entries_in_one_call_is_graded_whole(
    settings: Settings, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    """A client's grading carries its count of entries; counts of 1,024 and more are written
    out, not taken from the worker's table of the usual ones."""
    big = settings.model_copy(update={"batch_size": 2_000})
    start = clock.now_ms - 10 * MINUTE
    events = [
        Ev("many", "male" if i % 3 else GENDERS[i % 2], start + i * 100, start + i * 100 + 50)
        for i in range(1_100)
    ]
    assert len({hour_of(ev.ts) for ev in events}) == 1  # one call, one slot
    want = {model: Tally() for model in MODELS}
    expected(events, clock.now_ms, {}, want)
    write(sync_redis, big, events)
    loop = Loop(big)
    try:
        got = process(loop, clock, ["last", "top"])
    finally:
        loop.close()
    assert {m: t.counts() for m, t in got.items()} == {m: want[m].counts() for m in ("last", "top")}
    assert want["top"].counts()[:2] == (1_100, 1_099)  # every one graded; all but the first
    assert want["top"].correct != want["last"].correct  # predicted
