"""Erasure of a client whose entries a producer wrote to the wrong shard's stream (issue 21,
item 1): nothing of it is left, and neither `dead redrive` nor `replay` brings it back."""

from __future__ import annotations

import json
from typing import Any

import redis

from genderd import deadletters, erasure, replay, streams
from genderd.clock import wall_clock_ms
from genderd.deployment import Deployment
from genderd.keys import Keys, digest, shard_of
from genderd.transport import Links

from .support.api_helpers import drain
from .support.commands import cli
from .support.factories import make_reader, make_worker
from .support.runtime import FakeClock, Loop
from .test_erasure import _raw_mentions

X1 = "X1"
KEYS = Keys()


def _wrong(settings: Any, cid: str) -> int:
    """A shard that is not ``cid``'s."""
    return (shard_of(cid, settings.shards) + 1) % settings.shards


def _answers(aio: Loop, clock: FakeClock, cid: str) -> dict[str, Any]:
    [got] = aio.run(make_reader(aio.client, aio.settings, clock=clock).lookup_many([cid]))
    return got


def _dead(sync_redis: redis.Redis, settings: Any) -> list[dict[bytes, bytes]]:
    return [
        fields
        for shard in range(settings.shards)
        for _, fields in sync_redis.xrange(KEYS.dead(shard))
    ]


def _replay_all(aio: Loop, clock: FakeClock) -> list[Any]:
    outcomes = []
    for model in aio.registry:
        worker = make_worker(aio.client, model, aio.settings, clock=clock, consumer="replay")
        outcomes.append(aio.run(replay.replay(worker, force=True)))
    return outcomes


def test_a_wrong_shard_entry_is_erased_and_redrive_and_replay_bring_nothing_back(
    aio: Loop, sync_redis: redis.Redis, redis_url: str
) -> None:
    """The reproduction: a raw entry for X1 on the wrong shard's stream, dead-lettered
    `wrong_shard` by every model; `genderd erase X1`; `genderd dead redrive`: nothing answers
    for X1, no dead letter or stream entry names it, and a replay dead-letters nothing."""
    settings, clock = aio.settings, FakeClock(wall_clock_ms())  # the CLI reads the wall clock
    home, wrong = shard_of(X1, settings.shards), _wrong(settings, X1)
    sync_redis.xadd(KEYS.stream(home), {"cid": X1, "gender": "female", "ts": clock.now_ms - 9})
    raw = sync_redis.xadd(
        KEYS.stream(wrong), {"cid": X1, "gender": "male", "ts": clock.now_ms - 5}
    ).decode()
    drain(aio.loop, aio.client, settings, clock)
    letters = _dead(sync_redis, settings)
    assert {f[b"_reason"] for f in letters} == {b"wrong_shard"}
    assert {f[b"_id"].decode() for f in letters} == {raw}
    assert len(letters) == len(aio.registry)

    erased = cli(redis_url, settings, "erase", "--json", "--wait", X1)
    assert erased.exit_code == 0, erased.output
    final = json.loads(erased.stdout.splitlines()[-1])
    # its own shard's entry and the raw one on the wrong shard; every model's dead letter
    assert (final["entries"], final["dead_letters"]) == (2, len(aio.registry))
    assert _raw_mentions(redis_url, settings, X1) == []

    redriven = cli(redis_url, settings, "dead", "redrive")
    assert redriven.exit_code == 0 and "re-drove 0 entries" in redriven.output
    drain(aio.loop, aio.client, settings, clock)
    assert _answers(aio, clock, X1) == dict.fromkeys(aio.registry.names())
    assert _raw_mentions(redis_url, settings, X1) == []

    outcomes = _replay_all(aio, clock)
    assert all(o.dead == 0 for o in outcomes)
    assert _dead(sync_redis, settings) == []
    assert _answers(aio, clock, X1) == dict.fromkeys(aio.registry.names())
    assert cli(redis_url, settings, "dead", "list").output.strip() == "no dead letters"
    # every model's dead counter agrees: nothing
    for shard in range(settings.shards):
        stats = sync_redis.hgetall(KEYS.stats(shard))
        assert all(int(stats.get(f"{m}:dead".encode(), 0)) == 0 for m in aio.registry.names())


def test_the_markers_alone_stop_a_wrong_shard_entry_in_hand_redrive_and_replay(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    """An erasure whose scrub has not run yet: the wrong-shard entry and its dead letters are
    still there, and still nothing comes back. An entry a worker held in hand during the
    erasure is not dead-lettered afterwards."""
    settings = aio.settings
    wrong = _wrong(settings, X1)
    first = sync_redis.xadd(KEYS.stream(wrong), {"cid": X1, "gender": "male", "ts": clock.now_ms})
    drain(aio.loop, aio.client, settings, clock)  # every model dead-letters it
    held = sync_redis.xadd(KEYS.stream(wrong), {"cid": X1, "gender": "kids", "ts": clock.now_ms})
    in_hand = {}
    for model in aio.registry:  # read, not yet processed, during the erasure
        worker = make_worker(aio.client, model, settings, clock=clock, consumer="stopped")
        entries = aio.run(
            streams.read_new(aio.client, KEYS.stream(wrong), model.name, "stopped", 10, None)
        )
        assert [e[0] for e in entries] == [held.decode()]
        in_hand[model.name] = (worker, entries)

    deployment = Deployment.build(settings, clock)
    links = Links.over(aio.client)
    aio.run(erasure.erase(links.fast, deployment, [X1]))
    # a marker in every shard, each an id of that shard's own stream
    for shard in range(settings.shards):
        assert sync_redis.exists(KEYS.erased(shard, digest(X1)))
    assert sync_redis.get(KEYS.erased(wrong, digest(X1))).decode() == held.decode()

    for worker, entries in in_hand.values():
        outcome = aio.run(worker.processor.process(wrong, entries))
        assert (outcome.dead, outcome.erased) == (0, 1)
    assert len(_dead(sync_redis, settings)) == len(aio.registry)  # the first entry's only

    redriven = aio.run(_redrive_all(aio, deployment, links))  # the first entry's copies
    assert redriven.written == [] and redriven.erased == [first.decode()]
    assert _dead(sync_redis, settings) == []
    outcomes = _replay_all(aio, clock)
    assert all((o.applied, o.dead, o.erased) == (0, 0, 2) for o in outcomes)
    drain(aio.loop, aio.client, settings, clock)
    assert _answers(aio, clock, X1) == dict.fromkeys(aio.registry.names())
    assert _dead(sync_redis, settings) == []


async def _redrive_all(aio: Loop, deployment: Deployment, links: Links) -> deadletters.Redriven:
    letters = [letter async for letter in deadletters.scan(aio.client, deployment)]
    return await deadletters.redrive(aio.client, links.fast, deployment, letters)


def test_a_wrong_shard_entry_written_after_the_erasure_is_new_data(
    aio: Loop, sync_redis: redis.Redis, redis_url: str
) -> None:
    settings, clock = aio.settings, FakeClock(wall_clock_ms())
    wrong = _wrong(settings, X1)
    sync_redis.xadd(KEYS.stream(wrong), {"cid": X1, "gender": "male", "ts": clock.now_ms - 9})
    drain(aio.loop, aio.client, settings, clock)
    assert cli(redis_url, settings, "erase", "--wait", X1).exit_code == 0
    late = sync_redis.xadd(
        KEYS.stream(wrong), {"cid": X1, "gender": "kids", "ts": clock.now_ms - 1}
    ).decode()
    drain(aio.loop, aio.client, settings, clock)  # dead-lettered: it is on the wrong shard
    assert {f[b"_id"].decode() for f in _dead(sync_redis, settings)} == {late}

    redriven = cli(redis_url, settings, "dead", "redrive")
    assert redriven.exit_code == 0 and "re-drove 1 entries" in redriven.output
    drain(aio.loop, aio.client, settings, clock)
    got = _answers(aio, clock, X1)
    assert got["last"].gender == "kids" and got["top"].scores == {"kids": 1}
