"""Status (SPEC §6), stalled models, and trimming that never loses unacknowledged entries."""

from __future__ import annotations

import redis
from click.testing import CliRunner

from genderd import status, streams
from genderd.cli import main
from genderd.deployment import Deployment
from genderd.keys import Keys, shard_of

from .support.factories import make_worker
from .support.runtime import FakeClock, Loop


def test_status_counts_lag_pending_dead_and_applied(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    settings = aio.settings.model_copy(update={"stall_after_s": 3600})
    keys = Keys(settings.prefix)
    shard = shard_of("C1", settings.shards)
    for gender in ("male", "female", "nope"):
        sync_redis.xadd(keys.stream(shard), {"cid": "C1", "gender": gender})
    top = make_worker(aio.client, aio.registry.get("top"), settings, clock=clock)
    aio.run(top.ensure_groups())
    aio.run(top.drain())
    last = make_worker(aio.client, aio.registry.get("last"), settings, consumer="c", clock=clock)
    aio.run(last.ensure_groups())
    aio.run(streams.read_new(aio.client, keys.stream(shard), "last", "c", 2, None))  # in hand

    models = {m.name: m for m in aio.run(status.collect(aio.client, Deployment.build(settings)))}
    assert (
        models["top"].lag,
        models["top"].pending,
        models["top"].dead,
        models["top"].applied,
    ) == (0, 0, 1, 2)
    assert (models["last"].lag, models["last"].pending) == (1, 2)
    assert not models["last"].stalled  # its consumer talked to Redis just now
    # how far behind: the oldest entry not applied yet (ids carry their write time)
    first_id = sync_redis.xrange(keys.stream(shard), count=1)[0][0].decode()
    assert models["last"].oldest_waiting_ms == int(first_id.split("-")[0])  # pending
    assert models["top"].oldest_waiting_ms is None  # up to date
    # top7d has no group yet: everything waits for it, and no worker is there
    assert models["top7d"].lag == 3 and models["top7d"].stalled


def test_a_model_whose_workers_went_quiet_is_stalled(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    settings = aio.settings.model_copy(update={"stall_after_s": 0.05})
    keys = Keys(settings.prefix)
    worker = make_worker(aio.client, aio.registry.get("top"), settings, clock=clock)
    aio.run(worker.ensure_groups())
    aio.run(worker.drain())
    sync_redis.xadd(keys.stream(0), {"cid": "C1", "gender": "male"})
    import time

    time.sleep(0.1)
    models = {m.name: m for m in aio.run(status.collect(aio.client, Deployment.build(settings)))}
    assert models["top"].stalled and models["top"].lag == 1
    aio.run(worker.drain())
    models = {m.name: m for m in aio.run(status.collect(aio.client, Deployment.build(settings)))}
    assert not models["top"].stalled


def test_trimming_keeps_what_any_group_has_not_acknowledged(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    settings = aio.settings
    keys = Keys(settings.prefix)
    stream = keys.stream(0)
    ids = [
        sync_redis.xadd(stream, {"cid": "C", "gender": "male"}, id=f"{n}-1").decode()
        for n in range(1, 201)
    ]
    for name in ("top", "last"):
        aio.run(streams.ensure_group(aio.client, stream, name))
    # top has read 150 and acknowledged 100; last has read nothing.
    entries = aio.run(streams.read_new(aio.client, stream, "top", "c", 150, None))
    sync_redis.xack(stream, "top", *[i for i, _ in entries[:100]])
    cutoff = 1_000_000  # everything is older than the retention cutoff
    assert aio.run(streams.safe_trim_id(aio.client, keys, 0, cutoff)) == "0-1"  # last needs all
    sync_redis.xgroup_destroy(stream, "last")
    assert aio.run(streams.safe_trim_id(aio.client, keys, 0, cutoff)) == ids[100]  # oldest pending
    sync_redis.xack(stream, "top", *[i for i, _ in entries[100:]])
    assert aio.run(streams.safe_trim_id(aio.client, keys, 0, cutoff)) == "150-2"  # after last read
    aio.run(streams.trim(aio.client, keys, 0, cutoff))
    remaining = [i.decode() for i, _ in sync_redis.xrange(stream)]
    assert set(ids[150:]) <= set(remaining)  # unread entries all kept
    # retention bounds the rest: with a cutoff in the past nothing newer goes
    assert aio.run(streams.safe_trim_id(aio.client, keys, 0, 120)) == "120-0"


def test_status_watch_refreshes_a_live_view(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock, redis_url: str
) -> None:
    keys = Keys(aio.settings.prefix)
    shard = shard_of("C1", aio.settings.shards)
    sync_redis.xadd(keys.stream(shard), {"cid": "C1", "gender": "male"})
    env = {"GENDERD_REDIS_URL": redis_url, "GENDERD_SHARDS": str(aio.settings.shards)}
    args = ["status", "--watch", "--interval", "0.1", "--count", "2"]
    result = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    frames = [f for f in result.output.split("genderd status") if f.strip()]
    assert len(frames) == 2
    rows = {line.split()[0]: line.split() for line in frames[1].splitlines()[3:] if line.strip()}
    assert set(rows) == set(aio.registry.names())
    # no worker yet: one entry waiting for every model, 0 applied per second, behind in seconds
    assert rows["top"][1:4] == ["0", "1", "0"] and rows["top"][-1] == "STALLED"
    assert "s" in rows["top"] and "up to date" not in frames[1]
