"""The Python producer and plain XADD producers (SPEC §2)."""

from __future__ import annotations

import pytest
import redis

from genderd.deployment import open_deployment_sync
from genderd.events import EventError
from genderd.keys import Keys, shard_of
from genderd.settings import Settings

from .support.factories import make_producer, make_reader, make_worker
from .support.runtime import FakeClock, Loop


def test_producer_writes_each_event_to_its_shard_in_batches(
    sync_redis: redis.Redis, settings: Settings
) -> None:
    keys = Keys(settings.prefix)
    producer = make_producer(sync_redis, settings, batch_size=10)
    for n in range(25):
        producer.send(f"C{n}", "Female" if n % 2 else "male", ts=1_700_000_000_000 + n)
    assert producer.sent == 20  # two full batches went out; five wait for flush
    assert producer.flush() == 5
    rows = {}
    for shard in range(settings.shards):
        for _, fields in sync_redis.xrange(keys.stream(shard)):
            cid = fields[b"cid"].decode()
            rows[cid] = (shard, fields)
    assert len(rows) == 25
    for cid, (shard, fields) in rows.items():
        assert shard == shard_of(cid, settings.shards)
        assert fields[b"gender"] in (b"female", b"male")  # normalised before writing


def test_producer_refuses_bad_events_and_writes_nothing_for_them(
    sync_redis: redis.Redis, settings: Settings
) -> None:
    with make_producer(sync_redis, settings) as producer:
        with pytest.raises(EventError, match="unknown_gender"):
            producer.send("C1", "robots")
        with pytest.raises(EventError, match="bad_cid"):
            producer.send("has space", "male")
    assert producer.sent == 0
    assert sync_redis.keys("*events") == []


def test_plain_xadd_following_the_key_rule_is_processed(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    """What docs/concepts.md shows non-Python producers: crc32(utf8(cid)) mod shards."""
    import zlib

    cid = "C42"
    stream = f"{aio.settings.prefix}:{{s{zlib.crc32(cid.encode()) % aio.settings.shards}}}:events"
    sync_redis.execute_command("XADD", stream, "*", "cid", cid, "gender", "male")
    worker = make_worker(aio.client, aio.registry.get("last"), aio.settings, clock=clock)
    aio.run(worker.ensure_groups())
    assert aio.run(worker.drain()).applied == 1
    answer = aio.run(make_reader(aio.client, aio.settings).lookup(cid))["last"]
    assert answer is not None and answer.gender == "male"


def test_shard_count_is_fixed_at_first_start(sync_redis: redis.Redis, settings: Settings) -> None:
    assert open_deployment_sync(sync_redis, settings).settings.shards == 4
    later = settings.model_copy(update={"shards": 32})
    assert open_deployment_sync(sync_redis, later).settings.shards == 4  # the stored count wins
