"""Replay (SPEC §6): rebuilding one model from the retained streams gives the live answers."""

from __future__ import annotations

import pytest
import redis

from genderd import replay, streams
from genderd.keys import Keys, shard_of
from genderd.models import Answer
from genderd.producer import synthetic

from .support.factories import make_producer, make_reader, make_worker
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


def test_live_consumers_block_replay(aio: Loop, sync_redis: redis.Redis, clock: FakeClock) -> None:
    worker = make_worker(
        aio.client, aio.registry.get("top"), aio.settings, consumer="busy", clock=clock
    )
    with make_producer(sync_redis, aio.settings, clock=clock) as producer:
        for n in range(20):
            producer.send(f"C{n}", "male")
    aio.run(worker.ensure_groups())
    assert aio.run(worker.drain()).applied == 20
    deployment = worker.deployment
    live = aio.run(
        streams.live_consumers(aio.client, deployment.keys, deployment.shards, ["top"], 60_000)
    )
    assert live == ["busy"]
    with pytest.raises(replay.LiveConsumersError, match="busy"):
        aio.run(replay.replay(make_worker(aio.client, "top", aio.settings, consumer="replay")))
    # refused before touching anything: the answers and counters are as they were
    stats = [sync_redis.hget(worker.keys.stats(s), "top:applied") for s in worker.shards]
    assert sum(int(n or 0) for n in stats) == 20
    assert aio.run(make_reader(aio.client, aio.settings).lookup("C3"))["top"] is not None
