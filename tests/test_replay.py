"""Replay (SPEC §6): rebuilding one model from the retained streams gives the live answers."""

from __future__ import annotations

import redis

from genderd import replay
from genderd.keys import Keys, shard_of
from genderd.models import Answer
from genderd.producer import synthetic

from .support.factories import make_producer, make_reader, make_worker, stopped
from .support.runtime import FakeClock, Loop


def test_replay_gives_the_same_answers_as_live_processing(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    settings = aio.settings
    with make_producer(sync_redis, settings, clock=clock) as producer:
        for event in synthetic(600, 40, settings.genders, days=10, seed=7, clock=clock):
            producer.send_fields(event)
        producer.send_fields({"cid": "C1", "gender": "female"})  # arrival-time event
    sync_redis.xadd(
        Keys(settings.prefix).stream(0), {"cid": "oops", "gender": "?"}
    )  # a dead letter
    workers = {m.name: make_worker(aio.client, m, settings, clock=clock) for m in aio.registry}
    for worker in workers.values():
        aio.run(worker.ensure_groups())
        aio.run(worker.drain())
    cids = [f"C{n}" for n in range(1, 41)]
    reader = make_reader(aio.client, settings, clock=clock)
    live = aio.run(reader.lookup_many(cids))
    assert sum(1 for answers in live for a in answers.values() if a) > 100

    # Corrupt top7d's state, then replay it alone.
    keys = Keys(settings.prefix)
    sync_redis.hset(keys.result(shard_of("C1", settings.shards), "C1"), "top7d", "kids")
    progress: list[int] = []
    # force: the workers above ran just now (in this process), as a live worker would have
    aio.run(stopped(aio.client, settings, "top7d"))
    outcome = aio.run(replay.replay(workers["top7d"], progress.append, force=True))
    assert outcome.applied == 601 and outcome.dead == 1
    assert sum(progress) == 602
    assert core(aio.run(reader.lookup_many(cids))) == core(live)
    # The other models were not touched: their applied counters still count one pass.
    for name in ("last", "top"):
        applied = sum(
            int(sync_redis.hget(keys.stats(s), f"{name}:applied") or 0)
            for s in range(settings.shards)
        )
        assert applied == 601


def core(lookups: list[dict[str, Answer | None]]) -> list[dict[str, tuple[object, ...] | None]]:
    """Answers without as_of (which says when an answer was computed)."""
    return [
        {name: a and (a.gender, a.scores, a.last_event_ts) for name, a in answers.items()}
        for answers in lookups
    ]
