"""Property tests: any delivery schedule gives exactly the oracle's answers (SPEC §3-4).

Random event sets, written in random order, processed by several consumers per model that
crash with batches in hand, reclaim each other's entries and come back late with stale
batches: every model's answer equals the pure-Python reference for the set of events, nothing
is left pending, and each event that arrived within the grading delay is graded once by every
model (SPEC §14).
"""

from __future__ import annotations

import random

import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from genderd.clock import MS_PER_DAY

from .support import scenario
from .support.runtime import PROPERTY_TIMEOUT_S, FakeClock, Loop

HOUR_MS = 3_600_000
CIDS = ["C1", "C2", "C3", "user:with:colons", "Ω-7"]
GENDERS = ["female", "male", "kids", " Female ", "MALE"]


def event_strategy(now_ms: int) -> st.SearchStrategy[dict[str, str]]:
    # Hour-granular times over the last 10 days (plus a little of the future allowed by
    # max_future) make equal timestamps and window edges common.
    offsets = st.integers(min_value=-10 * 24, max_value=0).map(lambda h: h * HOUR_MS)
    ts = st.one_of(st.none(), offsets.map(lambda off: now_ms + off), st.just(now_ms + 60_000))
    return st.builds(
        lambda cid, gender, t: (
            {"cid": cid, "gender": gender} | ({} if t is None else {"ts": str(t)})
        ),
        st.sampled_from(CIDS),
        st.sampled_from(GENDERS),
        ts,
    )


def check_schedule(loop: Loop, clock: FakeClock, data: st.DataObject) -> None:
    events = data.draw(st.lists(event_strategy(clock.now_ms), max_size=40), label="events")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    consumers = data.draw(st.integers(1, 3), label="consumers")
    read_after_days = data.draw(st.integers(0, 9), label="read_after_days")
    rnd = random.Random(seed)
    client, settings, registry = loop.client, loop.settings, loop.registry

    written = loop.run(scenario.write(client, settings, events))
    schedule = loop.run(
        scenario.run_schedule(client, settings, registry, clock, rnd, consumers, rnd.randint(0, 60))
    )

    assert loop.run(scenario.pending_and_lag(client, settings)) == (0, 0)
    # Exactly once: every model applied each written entry once, however often delivered.
    applied = loop.run(scenario.applied_counts(client, settings))
    assert applied == {name: len(written) for name in registry.names()}, schedule
    # ... and graded each entry that arrived within the delay once (SPEC §14)
    graded = loop.run(scenario.graded_counts(client, settings, written))
    assert graded == {name: scenario.gradable(written, settings) for name in registry.names()}
    processed_at = clock.now_ms
    for read_at in sorted({processed_at, processed_at + read_after_days * MS_PER_DAY}):
        got = loop.run(scenario.answers(client, settings, registry, FakeClock(read_at), CIDS))
        for cid, answer in zip(CIDS, got, strict=True):
            want = scenario.expected(written, cid, processed_at, read_at, settings.window_days)
            problems = scenario.mismatches(answer, want)
            days = (read_at - processed_at) // MS_PER_DAY
            assert not problems, f"{cid} read at +{days}d: {problems}"


PROPERTY_SETTINGS = hsettings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.timeout(PROPERTY_TIMEOUT_S)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_any_schedule_gives_the_oracle_answers(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock, data: st.DataObject
) -> None:
    """On the real server (the bundled binary)."""
    sync_redis.flushall()
    check_schedule(aio, clock, data)


@pytest.mark.timeout(PROPERTY_TIMEOUT_S)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_any_schedule_gives_the_oracle_answers_fast_tier(
    fake_loop: Loop, clock: FakeClock, data: st.DataObject
) -> None:
    """The same property in-process on fakeredis (Lua through lupa): a fast semantics tier."""
    fake_loop.run(fake_loop.client.flushall())
    check_schedule(fake_loop, clock, data)
