"""The recovery from a stream id in the future (docs/operations.md, issue 21 item 4), run as
written: after it, a client erased while the stream was ahead gets its new events applied,
its old ones stay erased, and other clients keep their answers."""

from __future__ import annotations

import json
from typing import Any

import redis

from genderd import status
from genderd.clock import MS_PER_DAY, wall_clock_ms
from genderd.deployment import Deployment
from genderd.keys import Keys, digest, shard_of

from .support.api_helpers import drain
from .support.commands import cli
from .support.factories import make_producer, make_reader
from .support.runtime import FakeClock, Loop

KEYS = Keys()
FUTURE = "99999999999999-0"


def _same_shard(cid: str, shards: int, n: int) -> list[str]:
    """``n`` client ids of ``cid``'s shard, ``cid`` first."""
    found = [cid]
    i = 0
    while len(found) < n:
        i += 1
        if shard_of(f"K{i}", shards) == shard_of(cid, shards):
            found.append(f"K{i}")
    return found


def _answers(aio: Loop, clock: FakeClock, cids: list[str]) -> list[dict[str, Any]]:
    return aio.run(make_reader(aio.client, aio.settings, clock=clock).lookup_many(cids))


def test_the_documented_recovery_applies_new_events_of_a_client_erased_meanwhile(
    aio: Loop, sync_redis: redis.Redis, redis_url: str
) -> None:
    settings, clock = aio.settings, FakeClock(wall_clock_ms())  # the CLI reads the wall clock
    erased, kept, later = _same_shard("C42", settings.shards, 3)
    shard = shard_of(erased, settings.shards)
    stream = KEYS.stream(shard)
    with make_producer(sync_redis, settings, clock=clock) as producer:
        producer.send(erased, "female", clock.now_ms - 30)
        producer.send(kept, "female", clock.now_ms - 29)
        producer.send(later, "kids", clock.now_ms - 28)
    # a producer that gives ids itself: the stream's last id is now in the future
    sync_redis.execute_command(
        "XADD", stream, FUTURE, "cid", kept, "gender", "female", "ts", clock.now_ms - 20
    )
    drain(aio.loop, aio.client, settings, clock)
    assert cli(redis_url, settings, "erase", erased).exit_code == 0
    marker = KEYS.erased(shard, digest(erased))
    assert sync_redis.get(marker).decode() == FUTURE  # the id in the future
    warned = cli(redis_url, settings, "status")
    assert f"genderd stream set-aside {shard}" in warned.output

    # 1. every producer sends ts and lets Redis choose the ids (genderd's own do)
    # 2. stop the writers; the workers finish: status shows lag and pending 0
    with make_producer(sync_redis, settings, clock=clock) as producer:
        producer.send(later, "kids", clock.now_ms - 19)  # not yet applied
    refused = cli(redis_url, settings, "stream", "set-aside", str(shard))
    assert refused.exit_code == 1 and "not yet delivered" in refused.output
    assert sync_redis.exists(stream) and not sync_redis.exists(KEYS.stream_aside(shard))
    drain(aio.loop, aio.client, settings, clock)
    shown = json.loads(cli(redis_url, settings, "status", "--json").stdout)
    assert all((m["lag"], m["pending"]) == (0, 0) for m in shown)

    # 3. set the stream aside
    done = cli(redis_url, settings, "stream", "set-aside", str(shard))
    assert done.exit_code == 0, done.output
    assert "last id 99999999999999-1" in done.output and "re-based 1 erasure markers" in done.output
    assert sync_redis.pttl(KEYS.stream_aside(shard)) > (settings.retention_days - 1) * MS_PER_DAY
    assert sync_redis.get(marker).decode() == "0-0"
    deployment = Deployment.build(settings, clock)
    assert aio.run(status.streams_ahead(aio.client, deployment)) == []

    # 4. start the workers (and the writers): new events are applied, for every client
    with make_producer(sync_redis, settings, clock=clock) as producer:
        producer.send(erased, "male", clock.now_ms - 10)
        producer.send(kept, "kids", clock.now_ms - 9)
    last_id = sync_redis.xinfo_stream(stream)["last-generated-id"].decode()
    assert int(last_id.split("-")[0]) <= wall_clock_ms()  # ids from now again
    drain(aio.loop, aio.client, settings, clock)
    got_erased, got_kept, got_later = _answers(aio, clock, [erased, kept, later])
    # the erased client: its new event only, the old one stays erased
    assert got_erased["last"].gender == "male" and got_erased["top"].scores == {"male": 1}
    # every other answer and count is kept, and goes on
    assert got_kept["top"].scores == {"female": 2, "kids": 1}
    assert got_later["top"].scores == {"kids": 2}
    assert aio.run(status.collect(aio.client, deployment))[0].lag == 0

    # an erasure afterwards also removes the client's entries from the stream set aside
    assert cli(redis_url, settings, "erase", "--wait", kept).exit_code == 0
    for key in (stream, KEYS.stream_aside(shard)):
        assert all(f[b"cid"] != kept.encode() for _, f in sync_redis.xrange(key))
    assert sync_redis.xlen(KEYS.stream_aside(shard)) == 2  # the two of `later`
    # the scrub of the first erasure (pending through the set-aside, its cutoff an id of the
    # old stream) ran too, and kept the client's new entry: written after its erasure
    assert [f[b"gender"] for _, f in sync_redis.xrange(stream) if f[b"cid"] == erased.encode()] == [
        b"male"
    ]
    # ... and the new marker is an id of the new stream: kept's next event applies
    with make_producer(sync_redis, settings, clock=clock) as producer:
        producer.send(kept, "male", clock.now_ms - 1)
    drain(aio.loop, aio.client, settings, clock)
    [got_kept] = _answers(aio, clock, [kept])
    assert got_kept["top"].scores == {"male": 1}


def test_set_aside_refuses_a_stream_that_is_not_ahead(
    aio: Loop, sync_redis: redis.Redis, redis_url: str
) -> None:
    settings = aio.settings
    with make_producer(sync_redis, settings) as producer:
        producer.send("C1", "male")
    shard = shard_of("C1", settings.shards)
    refused = cli(redis_url, settings, "stream", "set-aside", str(shard))
    assert refused.exit_code == 2 and "not ahead of the clock" in refused.output
    assert sync_redis.xlen(KEYS.stream(shard)) == 1


def test_set_aside_refuses_while_a_model_has_no_group_on_the_shard(
    aio: Loop, sync_redis: redis.Redis, redis_url: str
) -> None:
    """Issue 27, finding 13: a model the deployment records, or has a group of on another
    shard, with no group on this shard would never see the entries set aside."""
    settings, clock = aio.settings, FakeClock(wall_clock_ms())
    shard = shard_of("C1", settings.shards)
    with make_producer(sync_redis, settings, clock=clock) as producer:
        producer.send("C1", "male", clock.now_ms - 30)
    sync_redis.execute_command(
        "XADD", KEYS.stream(shard), FUTURE, "cid", "C1", "gender", "male", "ts", clock.now_ms
    )
    drain(aio.loop, aio.client, settings, clock)  # every model's group: lag and pending 0
    ghost = {"kind": "python", "cls": "mine.Ghost", "shape": {"state": True}}
    sync_redis.hset(KEYS.models, "ghost", json.dumps(ghost))  # its workers never ran here
    elsewhere = KEYS.stream((shard + 1) % settings.shards)
    sync_redis.xgroup_create(elsewhere, "legacy", id="$", mkstream=True)

    refused = cli(redis_url, settings, "stream", "set-aside", str(shard))
    assert refused.exit_code == 1
    assert f"models ghost, legacy have no group on shard {shard}: the 2 entries" in (refused.output)
    assert not sync_redis.exists(KEYS.stream_aside(shard))  # nothing was done

    for name in ("ghost", "legacy"):
        assert cli(redis_url, settings, "models", "retire", name).exit_code == 0
    done = cli(redis_url, settings, "stream", "set-aside", str(shard))
    assert done.exit_code == 0, done.output
    assert sync_redis.exists(KEYS.stream_aside(shard))
