"""Dead letters (SPEC §2, §4): every reason, exactly once, with the original fields."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from genderd import status, streams
from genderd.clock import MS_PER_DAY
from genderd.deployment import Deployment
from genderd.keys import Keys, shard_of

from .support.api_helpers import drain
from .support.factories import make_producer, make_reader, make_worker
from .support.runtime import FakeClock, Loop


def dead_entries(sync_redis: redis.Redis, settings: Any) -> list[dict[str, str]]:
    keys = Keys(settings.prefix)
    rows = []
    for shard in range(settings.shards):
        for _, fields in sync_redis.xrange(keys.dead(shard)):
            rows.append({k.decode(): v.decode(errors="replace") for k, v in fields.items()})
    return rows


def test_every_reason_is_dead_lettered_once_per_model(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    settings = aio.settings
    keys = Keys(settings.prefix)
    bad = {
        "missing_cid": {"gender": "male"},
        "bad_cid": {"cid": "x" * 10_240, "gender": "male"},
        "missing_gender": {"cid": "C1"},
        "unknown_gender": {"cid": "C1", "gender": "robots"},
        "bad_ts": {"cid": "C1", "gender": "male", "ts": "yesterday"},
        "future_ts": {"cid": "C1", "gender": "male", "ts": str(clock.now_ms + 3_600_000)},
    }
    ids = {}
    for reason, fields in bad.items():
        # entries without a valid cid still land on some stream: producers may err anywhere
        stream = keys.stream(shard_of(fields.get("cid", "C1"), settings.shards))
        ids[reason] = sync_redis.xadd(stream, fields).decode()
    good = sync_redis.xadd(
        keys.stream(shard_of("C1", settings.shards)), {"cid": "C1", "gender": "kids"}
    )

    workers = [make_worker(aio.client, model, settings, clock=clock) for model in aio.registry]
    for worker in workers:
        aio.run(worker.ensure_groups())
        outcome = aio.run(worker.drain())
        assert (outcome.applied, outcome.dead, outcome.failed) == (1, len(bad), 0)
        # Delivering the same entries again (a stale batch) dead-letters nothing twice.
        entries = sync_redis.xrange(keys.stream(shard_of("C1", settings.shards)))
        again = aio.run(
            worker.processor.process(
                shard_of("C1", settings.shards), [(i.decode(), f) for i, f in entries]
            )
        )
        assert again.dead == 0 and again.applied == 0

    rows = dead_entries(sync_redis, settings)
    assert len(rows) == len(bad) * len(workers)
    for row in rows:
        reason = row["_reason"]
        assert row["_id"] == ids[reason]
        assert row["_model"] in aio.registry.names()
        assert row["_detail"]
        original = bad[reason]
        assert {k: row[k] for k in original} == original  # the original fields, untouched
    assert {(r["_model"], r["_reason"]) for r in rows} == {
        (m, r) for m in aio.registry.names() for r in bad
    }
    assert good
    # everything acknowledged; the per-model dead counters add up
    for shard in range(settings.shards):
        for info in aio.run(streams.groups(aio.client, keys, shard)):
            assert info.pending == 0 and info.lag == 0
    for model in aio.registry.names():
        total = sum(
            int(sync_redis.hget(keys.stats(s), f"{model}:dead") or 0)
            for s in range(settings.shards)
        )
        assert total == len(bad)


def test_entries_delivered_too_often_go_to_the_dead_letters(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    settings = aio.settings.model_copy(update={"max_deliveries": 3})
    keys = Keys(settings.prefix)
    shard = shard_of("C7", settings.shards)
    stream = keys.stream(shard)
    entry_id = sync_redis.xadd(stream, {"cid": "C7", "gender": "male"}).decode()
    model = aio.registry.get("top")
    crashing = make_worker(aio.client, model, settings, consumer="crashing", clock=clock)
    aio.run(crashing.ensure_groups())
    # Delivered once by a read, then claimed (and crashed on) twice more: 3 deliveries.
    assert [
        e for e, _ in aio.run(streams.read_new(aio.client, stream, "top", "crashing", 10, None))
    ] == [entry_id]
    for _ in range(2):
        claimed = aio.run(streams.reclaim(aio.client, stream, "top", "crashing", 0, 10))
        assert [e for e, _ in claimed.entries] == [entry_id]
    rescuer = make_worker(aio.client, model, settings, consumer="rescuer", clock=clock)
    outcome = aio.run(rescuer.reclaim(shard, min_idle_ms=0))  # the 4th delivery: too many
    assert (outcome.applied, outcome.dead) == (0, 1)
    [row] = dead_entries(sync_redis, settings)
    assert row["_reason"] == "max_deliveries" and row["_id"] == entry_id and row["cid"] == "C7"
    assert sync_redis.exists(keys.result(shard, "C7")) == 0
    assert aio.run(streams.groups(aio.client, keys, shard))[0].pending == 0


def _poison(
    sync_redis: redis.Redis, keys: Keys, shard: int, cid: str, model: str, now_ms: int
) -> None:
    """Make a key the model reads for ``cid`` hold a string instead of a hash."""
    if model == "top7d":  # today's day bucket
        sync_redis.set(keys.day_bucket(shard, model, now_ms // MS_PER_DAY, cid), "not a hash")
    elif model == "top-layout-1":  # a client answered under layout 1: its old counters
        sync_redis.hset(keys.result(shard, cid), "top", "male")
        sync_redis.set(keys.state(shard, "top", cid), "not a hash")
    else:
        sync_redis.set(keys.result(shard, cid), "not a hash")


@pytest.mark.parametrize("poisoned_key", ["last", "top", "top-layout-1", "top7d"])
def test_an_entry_that_breaks_the_script_does_not_stop_its_batch(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock, poisoned_key: str
) -> None:
    model = poisoned_key.split("-")[0]
    settings = aio.settings.model_copy(update={"max_deliveries": 2})
    keys = Keys(settings.prefix)
    shard = shard_of("C1", settings.shards)
    poisoned = next(f"P{n}" for n in range(1000) if shard_of(f"P{n}", settings.shards) == shard)
    # A key of the wrong type makes the script skip that client only, writing nothing for it.
    _poison(sync_redis, keys, shard, poisoned, poisoned_key, clock.now_ms)
    stream = keys.stream(shard)
    sync_redis.xadd(stream, {"cid": "C1", "gender": "male", "ts": str(clock.now_ms - 1)})
    bad_id = sync_redis.xadd(
        stream, {"cid": poisoned, "gender": "male", "ts": str(clock.now_ms)}
    ).decode()
    sync_redis.xadd(stream, {"cid": "C1", "gender": "female", "ts": str(clock.now_ms)})
    before = {key: sync_redis.dump(key) for key in sync_redis.keys(f"*{poisoned}*")}
    worker = make_worker(aio.client, aio.registry.get(model), settings, clock=clock)
    aio.run(worker.ensure_groups())
    outcome = aio.run(worker.poll(shard))
    assert (outcome.applied, outcome.failed) == (2, 1)
    assert sync_redis.hget(keys.result(shard, "C1"), model) == b"female"
    assert {key: sync_redis.dump(key) for key in sync_redis.keys(f"*{poisoned}*")} == before
    # retried on reclaim (2nd delivery), then dead-lettered on the 3rd
    assert aio.run(worker.reclaim(shard, min_idle_ms=0)).failed == 1
    assert aio.run(worker.reclaim(shard, min_idle_ms=0)).dead == 1
    [row] = dead_entries(sync_redis, settings)
    assert (row["_id"], row["_reason"]) == (bad_id, "max_deliveries")


def test_an_entry_on_the_wrong_shard_or_with_a_field_twice_is_dead_lettered(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    settings = aio.settings
    keys = Keys(settings.prefix)
    right = shard_of("C42", settings.shards)
    wrong = (right + 1) % settings.shards
    misplaced = sync_redis.xadd(keys.stream(wrong), {"cid": "C42", "gender": "male"}).decode()
    twice = sync_redis.execute_command(
        "XADD", keys.stream(right), "*", "cid", "C42", "gender", "female", "cid", "C43"
    ).decode()
    drain(aio.loop, aio.client, settings, clock)

    rows = dead_entries(sync_redis, settings)
    assert {(r["_id"], r["_reason"]) for r in rows} == {
        (misplaced, "wrong_shard"),
        (twice, "duplicate_field"),
    }
    assert len(rows) == 2 * len(aio.registry)  # once per model
    wrong_row = next(r for r in rows if r["_reason"] == "wrong_shard")
    assert keys.stream(right) in wrong_row["_detail"]  # the detail names the right stream
    # nothing was applied anywhere: no answer under either shard
    assert sync_redis.exists(keys.result(right, "C42"), keys.result(wrong, "C42")) == 0


def test_an_explicit_future_entry_id_does_not_poison_its_shard(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    settings = aio.settings
    keys = Keys(settings.prefix)
    shard = shard_of("Q", settings.shards)
    stream = keys.stream(shard)
    poison = sync_redis.xadd(stream, {"cid": "Q", "gender": "male"}, id="99999999999999-0")
    # every later id of this stream is in the year 5138 too
    no_ts = sync_redis.xadd(stream, {"cid": "Q", "gender": "female"}).decode()
    assert no_ts.startswith("99999999999999-")
    with_ts = sync_redis.xadd(stream, {"cid": "Q", "gender": "kids", "ts": clock.now_ms - 1000})
    with make_producer(sync_redis, settings, clock=clock) as producer:
        producer.send("Q", "female")  # the Producer always sends ts (the clock's now)
    drain(aio.loop, aio.client, settings, clock)

    reasons = {r["_id"]: r["_reason"] for r in dead_entries(sync_redis, settings)}
    assert reasons == {poison.decode(): "future_ts", no_ts: "future_ts"}
    assert with_ts
    answers = aio.run(make_reader(aio.client, settings, clock=clock).lookup("Q"))
    last = answers["last"]
    assert last is not None and (last.gender, last.last_event_ts) == ("female", clock.now_ms)
    assert answers["top"] is not None and answers["top"].scores == {"female": 1, "kids": 1}
    # no day bucket got a TTL of billions of seconds
    for key in sync_redis.scan_iter(match=f"{keys.tag(shard)}:m:top7d:*"):
        assert 0 < sync_redis.ttl(key) < 9 * 86_400

    # status sees the stream's id in the future
    ahead = aio.run(status.streams_ahead(aio.client, Deployment.build(settings, clock)))
    assert [(a.shard, a.last_id.startswith("99999999999999-")) for a in ahead] == [(shard, True)]


def test_a_batch_is_applied_when_other_consumers_hold_many_entries_within_its_range(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    """A batch's entries are applied, once, even when another consumer holds hundreds of
    entries between them (a guard for any ownership check that looks up pending entries)."""
    settings = aio.settings
    keys = Keys(settings.prefix)
    shard = shard_of("C1", settings.shards)
    stream = keys.stream(shard)
    ids = [sync_redis.xadd(stream, {"cid": "C1", "gender": "male"}).decode() for _ in range(300)]
    holder = make_worker(aio.client, "top", settings, consumer="holder", clock=clock)
    aio.run(holder.ensure_groups())
    held = aio.run(streams.read_new(aio.client, stream, "top", "holder", 300, None))
    assert len(held) == 300  # all pending for "holder"
    other = make_worker(aio.client, "top", settings, consumer="other", clock=clock)
    batch = [held[0], held[-1]]
    outcome = aio.run(other.processor.process(shard, batch))
    assert (outcome.applied, outcome.failed) == (2, 0)
    assert sync_redis.hget(keys.result(shard, "C1"), "top:n:male") == b"2"
    again = aio.run(other.processor.process(shard, batch))  # acknowledged: nothing twice
    assert again.applied == 0
    pending = sync_redis.xpending(stream, "top")["pending"]
    assert pending == 298 and ids[0] != ids[-1]
