"""A model cannot take its worker down (issue 19): whatever ``identify_gender`` raises
(``SystemExit``, ``KeyboardInterrupt``, ``CancelledError``, ``GeneratorExit``) and a call that
runs past ``model_timeout_ms`` are that event's ``model_error``; the worker keeps running and
its other shards keep applying, during a slow call too."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import redis

from genderd.keys import Keys, shard_of
from genderd.ratelog import RateLimitedLog
from genderd.settings import Settings

from .support import failing
from .support.factories import make_worker
from .support.runtime import Loop
from .test_deadletter import dead_entries

PLUGINS = tuple(
    f"tests.support.failing:{name}"
    for name in ("Exits", "Interrupts", "Cancels", "Closes", "Sleepy")
)
TIMEOUT_MS = 300
#: the longest the worker's loop may go without running (scheduling on a busy machine); a loop
#: that waited for the held model call would go for as long as the hold
LOOP_GAP_MAX_S = 5.0


def _cids(settings: Settings) -> tuple[str, str, str]:
    """A failing client, and two good ones: one on its shard, one on another."""
    bad = "bad1"
    shard = shard_of(bad, settings.shards)
    same = next(c for c in (f"g{n}" for n in range(999)) if shard_of(c, settings.shards) == shard)
    other = next(c for c in (f"o{n}" for n in range(999)) if shard_of(c, settings.shards) != shard)
    return bad, same, other


async def _until(check: object, limit_s: float = 10.0) -> float:
    """Seconds until ``check()`` is true (fails the test after ``limit_s``)."""
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - started < limit_s, "timed out"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


@pytest.fixture
def failing_loop(settings: Settings) -> Loop:
    loop = Loop(settings.model_copy(update={"plugins": PLUGINS, "model_timeout_ms": TIMEOUT_MS}))
    yield loop  # type: ignore[misc]
    loop.close()


@pytest.mark.parametrize(
    ("model", "detail"),
    [
        ("exits", "SystemExit: 3"),
        ("interrupts", "KeyboardInterrupt"),
        ("cancels", "CancelledError"),
        ("closes", "GeneratorExit: closed"),
    ],
)
def test_whatever_a_model_raises_is_its_events_model_error(
    failing_loop: Loop, sync_redis: redis.Redis, model: str, detail: str
) -> None:
    settings = failing_loop.settings
    keys = Keys(settings.prefix)
    bad, same, other = _cids(settings)
    worker = make_worker(failing_loop.client, model, settings)

    def answered(cid: str) -> bool:
        return sync_redis.hget(keys.result(shard_of(cid, settings.shards), cid), model) is not None

    async def scenario() -> None:
        running = asyncio.create_task(worker.run())
        for cid in (same, bad, other, bad):
            sync_redis.xadd(
                keys.stream(shard_of(cid, settings.shards)), {"cid": cid, "gender": "male"}
            )
        await _until(lambda: answered(same) and answered(other) and worker.totals.dead == 2)
        assert not running.done()
        # the failing shard keeps applying after its failures
        sync_redis.xadd(
            keys.stream(shard_of(bad, settings.shards)), {"cid": same, "gender": "male"}
        )
        await _until(lambda: worker.totals.applied == 3)
        assert not running.done()
        worker.stop()
        await running

    failing_loop.run(scenario())
    rows = dead_entries(sync_redis, settings)
    assert [(r["_model"], r["_reason"], r["_detail"]) for r in rows] == [
        (model, "model_error", detail)
    ] * 2
    assert not sync_redis.exists(keys.result(shard_of(bad, settings.shards), bad))


def test_a_slow_model_call_is_a_timeout_and_blocks_no_other_shard(
    failing_loop: Loop, sync_redis: redis.Redis
) -> None:
    settings = failing_loop.settings
    keys = Keys(settings.prefix)
    bad, same, other = _cids(settings)
    worker = make_worker(failing_loop.client, "sleepy", settings)
    gaps: list[float] = []

    async def ticking() -> None:  # the loop's responsiveness (what the heartbeat needs)
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    def answer(cid: str) -> bytes | None:
        got = sync_redis.hget(keys.result(shard_of(cid, settings.shards), cid), "sleepy")
        return got  # type: ignore[return-value]

    async def scenario() -> None:
        running = asyncio.create_task(worker.run())
        ticks = asyncio.create_task(ticking())
        sync_redis.xadd(keys.stream(shard_of(bad, settings.shards)), {"cid": bad, "gender": "male"})
        await _until(failing.SLEEPING.is_set)
        sync_redis.xadd(
            keys.stream(shard_of(other, settings.shards)), {"cid": other, "gender": "male"}
        )
        await _until(lambda: answer(other) is not None)
        assert failing.SLEEPING.is_set(), "the other shard waited for the held call"
        await _until(lambda: worker.totals.dead == 1)
        sync_redis.xadd(
            keys.stream(shard_of(bad, settings.shards)), {"cid": same, "gender": "male"}
        )
        await _until(lambda: answer(same) is not None)
        assert failing.SLEEPING.is_set(), "its own shard waited for the held call"
        assert not running.done()
        ticks.cancel()
        worker.stop()
        await running
        assert failing.SLEEPING.is_set(), "the worker waited for the held call to stop"

    failing.RELEASE.clear()
    try:
        failing_loop.run(scenario())
    finally:
        failing.RELEASE.set()  # the abandoned call returns; its thread ends
    # a loop that waited for the model would show a gap as long as the hold (SLEEP_S)
    assert max(gaps) < LOOP_GAP_MAX_S
    [row] = dead_entries(sync_redis, settings)
    assert (row["_model"], row["_reason"]) == ("sleepy", "model_error")
    assert row["_detail"].startswith(f"the model took longer than {TIMEOUT_MS} ms on this event")
    assert answer(bad) is None


def test_repeated_model_errors_are_logged_once_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("genderd.test"), 10.0, lambda: now[0])
    with caplog.at_level(logging.WARNING, "genderd.test"):
        for n in range(1000):
            now[0] = n * 0.03  # 1,000 failures in 30 s
            limited.warning(("m", "RuntimeError"), f"m: entry {n}: RuntimeError: boom")
        limited.warning(("m", "ValueError"), "m: entry x: ValueError: other")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4  # the last 331 wait for the next interval
    assert lines[0] == "m: entry 0: RuntimeError: boom"
    assert lines[1].endswith("(333 more like this in the last 10 s)")
    assert lines[-1] == "m: entry x: ValueError: other"
