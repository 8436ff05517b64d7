"""The top7d window (SPEC §3): day buckets, edges, fixed expiry, decay at read time."""

from __future__ import annotations

import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from genderd.clock import MS_PER_DAY
from genderd.keys import Keys, shard_of

from .support import oracle, scenario
from .support.factories import make_reader, make_worker
from .support.runtime import PROPERTY_TIMEOUT_S, FakeClock, Loop

HOUR = 3_600_000
AHEAD = 4 * 60_000  # within the default max_future (5 min)


def add(sync_redis: redis.Redis, settings, cid: str, gender: str, ts: int) -> None:  # type: ignore[no-untyped-def]
    keys = Keys(settings.prefix)
    sync_redis.xadd(
        keys.stream(shard_of(cid, settings.shards)), {"cid": cid, "gender": gender, "ts": ts}
    )


def process(aio: Loop, clock: FakeClock) -> None:
    for model in aio.registry:
        worker = make_worker(aio.client, model, aio.settings, clock=clock)
        aio.run(worker.ensure_groups())
        aio.run(worker.drain())


def top7d(aio: Loop, cid: str, at: int):  # type: ignore[no-untyped-def]
    reader = make_reader(aio.client, aio.settings, clock=FakeClock(at))
    return aio.run(reader.lookup(cid))["top7d"]


def test_window_edges_days_d_minus_7_d_minus_6_and_d(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    day = clock.day
    add(
        sync_redis, aio.settings, "C1", "kids", (day - 7) * MS_PER_DAY + MS_PER_DAY - 1
    )  # last ms of D-7
    add(sync_redis, aio.settings, "C1", "kids", (day - 7) * MS_PER_DAY + HOUR)
    add(sync_redis, aio.settings, "C1", "male", (day - 6) * MS_PER_DAY)  # first ms of D-6
    add(sync_redis, aio.settings, "C1", "female", day * MS_PER_DAY + HOUR)
    process(aio, clock)

    answer = top7d(aio, "C1", clock.now_ms)
    assert answer is not None
    # D-7 is outside the window: kids (2 events) is not counted; male and female tie at 1,
    # and female's newest event is newer.
    assert answer.scores == {"female": 1, "male": 1}
    assert answer.gender == "female"
    # top counts everything
    reader = make_reader(aio.client, aio.settings, clock=clock)
    assert aio.run(reader.lookup("C1"))["top"].scores == {"female": 1, "kids": 2, "male": 1}  # type: ignore[union-attr]
    # no bucket was created for the event already older than the window
    keys = Keys(aio.settings.prefix)
    shard = shard_of("C1", aio.settings.shards)
    assert not sync_redis.exists(keys.day_bucket(shard, "top7d", day - 7, "C1"))


def test_answer_decays_at_read_time_without_new_events(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    day = clock.day
    add(sync_redis, aio.settings, "C2", "female", (day - 6) * MS_PER_DAY + HOUR)
    add(sync_redis, aio.settings, "C2", "female", (day - 6) * MS_PER_DAY + 2 * HOUR)
    add(sync_redis, aio.settings, "C2", "male", (day - 5) * MS_PER_DAY)
    process(aio, clock)
    assert top7d(aio, "C2", clock.now_ms).gender == "female"  # type: ignore[union-attr]

    # One day later D-6 has left the window: only the male event remains.
    one_day = top7d(aio, "C2", clock.now_ms + MS_PER_DAY)
    assert (one_day.gender, one_day.scores) == ("male", {"male": 1})  # type: ignore[union-attr]
    assert one_day.as_of == clock.now_ms + MS_PER_DAY  # recomputed at read time  # type: ignore[union-attr]
    # Two days later nothing is left: no answer, and the stored answer is gone.
    assert top7d(aio, "C2", clock.now_ms + 2 * MS_PER_DAY) is None
    keys = Keys(aio.settings.prefix)
    stored = sync_redis.hgetall(keys.result(shard_of("C2", aio.settings.shards), "C2"))
    assert not any(k.startswith(b"top7d") for k in stored)
    assert stored[b"top"] == b"female"  # other models untouched


def test_bought_womens_six_days_ago_has_no_answer_two_days_later(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    add(sync_redis, aio.settings, "C3", "female", clock.now_ms - 6 * MS_PER_DAY)
    process(aio, clock)
    assert top7d(aio, "C3", clock.now_ms).gender == "female"  # type: ignore[union-attr]
    assert top7d(aio, "C3", clock.now_ms + 2 * MS_PER_DAY) is None


def test_buckets_get_a_fixed_expireat_that_new_events_do_not_refresh(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    day = clock.day
    window = aio.settings.window_days
    keys = Keys(aio.settings.prefix)
    shard = shard_of("C4", aio.settings.shards)
    bucket = keys.day_bucket(shard, "top7d", day, "C4")
    add(sync_redis, aio.settings, "C4", "male", clock.now_ms - HOUR)
    process(aio, clock)
    expected = (day + window) * MS_PER_DAY  # end of the last day the bucket can be in a window
    assert sync_redis.pexpiretime(bucket) == expected
    add(sync_redis, aio.settings, "C4", "male", clock.now_ms)
    clock.advance(HOUR)
    process(aio, clock)
    assert sync_redis.pexpiretime(bucket) == expected
    assert sync_redis.hget(bucket, "male") == b"2"


def test_an_event_up_to_max_future_ahead_counts_once_its_day_comes(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    # Processing one minute before midnight; the event is stamped two minutes later, tomorrow.
    clock.now_ms = (clock.day + 1) * MS_PER_DAY - 60_000
    add(sync_redis, aio.settings, "C5", "kids", clock.now_ms + 120_000)
    process(aio, clock)
    assert top7d(aio, "C5", clock.now_ms) is None  # not inside today's window yet
    tomorrow = top7d(aio, "C5", clock.now_ms + 120_000)
    assert tomorrow is not None and tomorrow.gender == "kids"


def test_stored_answer_is_served_while_valid(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    add(sync_redis, aio.settings, "C6", "male", clock.now_ms)
    process(aio, clock)
    first = top7d(aio, "C6", clock.now_ms + HOUR)
    assert first is not None and first.as_of == clock.now_ms  # cache hit: computed by the worker


@pytest.mark.timeout(PROPERTY_TIMEOUT_S)
@hsettings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_windowed_counters_follow_the_days_of_processing_and_reading(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock, data: st.DataObject
) -> None:
    """Waves of events processed on different days, with lookups (which write recomputed
    answers back) in between: the counters a batch adds to are always the window's of its
    own day, and every answer equals the oracle's at every read."""
    sync_redis.flushall()
    start = FakeClock(clock.now_ms)
    cids = ["W1", "W2", "W:3"]
    processed: list[tuple[oracle.Ev, int]] = []
    waves = data.draw(st.integers(1, 5), label="waves")
    for _ in range(waves):
        start.advance(data.draw(st.integers(0, 4 * 24), label="hours later") * HOUR)
        events = data.draw(
            st.lists(
                st.tuples(
                    st.sampled_from(cids),
                    st.sampled_from(["female", "male", "kids"]),
                    # up to 9 days old, or a little ahead of the clock (within max_future)
                    st.one_of(st.integers(-9 * 24, 0).map(lambda h: h * HOUR), st.just(AHEAD)),
                ),
                max_size=12,
            ),
            label="events",
        )
        fields = [
            {"cid": cid, "gender": gender, "ts": str(start.now_ms + offset)}
            for cid, gender, offset in events
        ]
        written = aio.run(scenario.write(aio.client, aio.settings, fields))
        processed += [(e, start.now_ms) for e in written]
        process(aio, start)
        if data.draw(st.booleans(), label="read now"):
            _check_top7d(aio, cids, processed, start.now_ms)
    for later in sorted(set(data.draw(st.lists(st.integers(0, 9), max_size=3), label="reads"))):
        _check_top7d(aio, cids, processed, start.now_ms + later * MS_PER_DAY)


def _check_top7d(
    aio: Loop, cids: list[str], processed: list[tuple[oracle.Ev, int]], read_at: int
) -> None:
    window = aio.settings.window_days
    for cid in cids:
        got = top7d(aio, cid, read_at)
        want = oracle.top_window_per_event(
            [(e, at) for e, at in processed if e.cid == cid], read_at, window
        )
        if want is None:
            assert got is None, (cid, read_at, got)
        else:
            assert got is not None, (cid, read_at, want)
            assert (got.gender, got.scores, got.last_event_ts) == (
                want.gender,
                want.scores,
                want.last_event_ts,
            ), (cid, read_at)


def test_events_of_tomorrow_alone_count_from_tomorrow(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    """Events up to max_future ahead that fall on the next UTC day, in two batches of one day
    (the second adds to counters that hold nothing of today): no answer today, one tomorrow."""
    day = clock.day
    clock.now_ms = (day + 1) * MS_PER_DAY - 60_000  # a minute before midnight
    worker = make_worker(aio.client, "top7d", aio.settings, clock=clock)
    aio.run(worker.ensure_groups())
    for n in range(2):
        add(sync_redis, aio.settings, "T1", "kids", (day + 1) * MS_PER_DAY + n * 1_000)
        outcome = aio.run(worker.drain())
        assert (outcome.applied, outcome.failed) == (1, 0)
    assert top7d(aio, "T1", clock.now_ms) is None
    tomorrow = top7d(aio, "T1", (day + 1) * MS_PER_DAY + HOUR)
    assert tomorrow is not None and (tomorrow.gender, tomorrow.scores) == ("kids", {"kids": 2})
