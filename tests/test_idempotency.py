"""Retries that never count an event twice (SPEC §12): ``Idempotency-Key`` on ``POST
/v1/events``, keyed batches of the Python producer, and what a shard stream of another type
answers. Every check reads what the streams hold, on the session's real server."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from typing import Any

import httpx
import pytest
import redis

from genderd.deployment import Deployment
from genderd.ingest import MAX_KEY_LENGTH, Event, IdempotencyKeyError, plan, write_sync
from genderd.keys import Keys, digest, shard_of
from genderd.settings import Settings

from .support.api_helpers import ApiClient, MakeApi, process, stream_key
from .support.commands import wait_until
from .support.factories import make_producer
from .support.runtime import FakeClock, Loop

KEY = "order-7f3a/attempt"


def entries(sync_redis: redis.Redis, settings: Settings) -> Counter[tuple[str, str, str]]:
    """(cid, gender, ts) of every entry of every shard stream, counted."""
    found: Counter[tuple[str, str, str]] = Counter()
    for shard in range(settings.shards):
        key = Keys(settings.prefix).stream(shard)
        if sync_redis.type(key) != b"stream":
            continue
        for _, fields in sync_redis.xrange(key):
            found[
                (fields[b"cid"].decode(), fields[b"gender"].decode(), fields[b"ts"].decode())
            ] += 1
    return found


def batch_of(clock: FakeClock, n: int = 40, tag: str = "E") -> list[dict[str, Any]]:
    return [
        {"cid": f"{tag}{i}", "gender": ["female", "male", "kids"][i % 3], "ts": clock.now_ms - i}
        for i in range(n)
    ]


def once_each(events: list[dict[str, Any]]) -> Counter[tuple[str, str, str]]:
    return Counter((str(e["cid"]), str(e["gender"]), str(e["ts"])) for e in events)


def post(api: ApiClient, events: list[dict[str, Any]], key: str | None = KEY) -> httpx.Response:
    headers = {} if key is None else {"Idempotency-Key": key}
    return api.post("/v1/events", json={"events": events}, headers=headers)


def as_written(events: list[dict[str, Any]]) -> list[Event]:
    """The events as the API validates them (explicit ts: written as given)."""
    return [(str(e["cid"]), str(e["gender"]), int(e["ts"]), int(e["ts"])) for e in events]


# -- POST /v1/events with an Idempotency-Key ---------------------------------------------------


def test_a_repeat_with_the_same_key_writes_nothing_twice_and_answers_the_same(
    api: ApiClient, sync_redis: redis.Redis, settings: Settings, clock: FakeClock
) -> None:
    events = batch_of(clock)
    for _ in range(3):
        response = post(api, events)
        assert response.status_code == 202, response.text
        assert response.json() == {"accepted": len(events)}
    assert entries(sync_redis, settings) == once_each(events)
    metrics = api.get("/metrics").text
    assert "genderd_events_ingested_total 40.0" in metrics
    assert "genderd_events_ingest_repeated_total 80.0" in metrics


def test_a_repeat_after_a_partial_write_writes_exactly_the_missing_parts(
    api: ApiClient, sync_redis: redis.Redis, settings: Settings, clock: FakeClock
) -> None:
    """The earlier attempt wrote some parts (on a standalone server: one, with the key's
    claim), then died (a crash, a timeout, a failover): the repeat writes the other parts, and
    nothing of those."""
    events = batch_of(clock)
    batch = plan(Deployment.build(settings), as_written(events), KEY, settings.idempotency_ttl_s)
    # standalone: every part checks the claim, all go in one round trip
    assert batch.first is None and len(batch.rest) >= 2  # 40 events span every shard
    assert all(len(call.keys) == 3 for call in batch.rest)
    on_cluster = Deployment.build(settings.model_copy(update={"cluster": True}))
    split = plan(on_cluster, as_written(events), KEY, settings.idempotency_ttl_s)
    assert split.first is not None and all(len(c.keys) == 2 for c in [split.first, *split.rest])
    earlier = dataclasses.replace(batch, rest=batch.rest[:1])
    written_before = write_sync(sync_redis, earlier)
    assert 0 < written_before < len(events)

    response = post(api, events)
    assert response.status_code == 202 and response.json() == {"accepted": len(events)}
    assert entries(sync_redis, settings) == once_each(events)
    assert post(api, events).status_code == 202
    assert entries(sync_redis, settings) == once_each(events)


def test_the_same_key_with_another_body_is_422_and_writes_nothing(
    api: ApiClient, sync_redis: redis.Redis, settings: Settings, clock: FakeClock
) -> None:
    first = batch_of(clock, 5, "A")
    assert post(api, first).status_code == 202
    # a body whose events lie on other shards than the first one's: only the key's claim,
    # on its home shard, can refuse it before any part is written
    shards_of_first = {shard_of(str(e["cid"]), settings.shards) for e in first}
    other = [e for e in batch_of(clock, 60, "B") if e not in first][:20]
    for body in (other, first[:4], [{**first[0], "gender": "male"}, *first[1:]]):
        response = post(api, body)
        assert response.status_code == 422, response.text
        [problem] = response.json()["detail"]
        assert problem["loc"] == ["header", "Idempotency-Key"]
        assert problem["type"] == "idempotency_key_reused"
        assert "another request body" in problem["msg"]
    assert entries(sync_redis, settings) == once_each(first)
    assert shards_of_first  # (the first body wrote somewhere)
    # a bad body with a used key: the events' 422, as without a key
    bad = post(api, [{"cid": "x y", "gender": "male"}])
    assert bad.status_code == 422 and bad.json()["detail"][0]["reason"] == "bad_cid"


def test_concurrent_repeats_write_each_event_once(
    api: ApiClient, sync_redis: redis.Redis, settings: Settings, clock: FakeClock
) -> None:
    events = batch_of(clock, 200)

    async def all_at_once() -> list[httpx.Response]:
        assert api.http is not None
        return await asyncio.gather(
            *(
                api.http.post(
                    "/v1/events", json={"events": events}, headers={"Idempotency-Key": KEY}
                )
                for _ in range(8)
            )
        )

    responses = api.run(all_at_once())
    assert [r.status_code for r in responses] == [202] * 8
    assert all(r.json() == {"accepted": 200} for r in responses)
    assert entries(sync_redis, settings) == once_each(events)


def test_events_without_ts_repeat_as_the_same_body(
    api: ApiClient, sync_redis: redis.Redis, settings: Settings, clock: FakeClock
) -> None:
    """A left-out ts is part of the body as left out: the repeat, made later, is the same
    request (its events are not written again with the later time)."""
    events = [{"cid": f"N{i}", "gender": "kids"} for i in range(10)]
    assert post(api, events).status_code == 202
    clock.advance(60_000)
    assert post(api, events).status_code == 202
    assert sum(entries(sync_redis, settings).values()) == 10


def test_a_request_repeated_without_a_key_is_written_again(
    api: ApiClient, sync_redis: redis.Redis, settings: Settings, clock: FakeClock
) -> None:
    """Without a key a repeat is a new write: at-least-once, as documented."""
    events = batch_of(clock, 6)
    assert post(api, events, key=None).status_code == 202
    assert post(api, events, key=None).status_code == 202
    assert entries(sync_redis, settings) == Counter({k: 2 for k in once_each(events)})
    # and a key is only ever stored as its digest
    assert post(api, events, key="my-secret-key").status_code == 202
    for name in sync_redis.keys("*"):
        assert b"my-secret-key" not in name
        if sync_redis.type(name) == b"string":
            assert b"my-secret-key" not in (sync_redis.get(name) or b"")


def test_a_key_is_remembered_for_the_ttl_then_forgotten(
    make_api: MakeApi, sync_redis: redis.Redis, settings: Settings, clock: FakeClock
) -> None:
    api = make_api(idempotency_ttl_s=1)
    events = batch_of(clock, 8)
    assert post(api, events).status_code == 202
    records = sync_redis.keys(f"genderd:*:idem:{digest(KEY)}")
    assert records  # one per shard written, the home shard's among them
    assert all(0 < sync_redis.pttl(record) <= 1000 for record in records)
    time.sleep(1.1)  # past the records' lifetime: a repeat is a new request
    assert post(api, events).status_code == 202
    assert entries(sync_redis, settings) == Counter({k: 2 for k in once_each(events)})


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("", "empty"),
        ("k" * (MAX_KEY_LENGTH + 1), "256 characters long; at most 255"),
        ("tab\there", "not printable ASCII"),
        ("bell\x07", "not printable ASCII"),
        ("caf\u00e9", "not printable ASCII"),
    ],
)
def test_a_bad_key_is_422_with_the_reason_and_nothing_is_written(
    api: ApiClient,
    sync_redis: redis.Redis,
    settings: Settings,
    clock: FakeClock,
    key: str,
    says: str,
) -> None:
    response = api.post(
        "/v1/events",
        json={"events": batch_of(clock, 3)},
        headers=[(b"Idempotency-Key", key.encode("latin-1"))],
    )
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["header", "Idempotency-Key"]
    assert problem["type"] == "bad_idempotency_key"
    assert says in problem["msg"]
    assert sync_redis.keys("*") == [] or not entries(sync_redis, settings)


def test_the_longest_key_works_and_a_key_given_twice_is_422(
    api: ApiClient, sync_redis: redis.Redis, settings: Settings, clock: FakeClock
) -> None:
    events = batch_of(clock, 3)
    longest = "~ !" * 85
    assert len(longest) == MAX_KEY_LENGTH
    assert post(api, events, key=longest).status_code == 202
    assert post(api, events, key=longest).status_code == 202
    twice = api.post(
        "/v1/events",
        json={"events": events},
        headers=[(b"Idempotency-Key", b"a"), (b"Idempotency-Key", b"b")],
    )
    assert twice.status_code == 422 and "more than once" in twice.text
    assert entries(sync_redis, settings) == once_each(events)


# -- a shard stream of another type -------------------------------------------------------------


def test_a_shard_stream_holding_a_string_is_503_naming_it_and_a_keyed_retry_completes(
    api: ApiClient, sync_redis: redis.Redis, settings: Settings, clock: FakeClock
) -> None:
    events = batch_of(clock, 40)
    broken = stream_key(settings, "E0")
    sync_redis.set(broken, "not a stream")
    response = post(api, events)
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"]
    assert broken in response.json()["detail"] and "string" in response.json()["detail"]
    on_broken = [e for e in events if stream_key(settings, str(e["cid"])) == broken]
    assert not any(
        k[0] in {str(e["cid"]) for e in on_broken} for k in entries(sync_redis, settings)
    )

    # without a key the same: 503, never 500
    assert post(api, events, key=None).status_code == 503
    # the operator removes the key; the retry with the key writes what is missing, once each
    sync_redis.delete(broken)
    for shard in range(settings.shards):  # forget the unkeyed attempt's writes
        if Keys().stream(shard) != broken:
            sync_redis.delete(Keys().stream(shard))
    sync_redis.delete(*[k for k in sync_redis.keys("*:idem:*") if b"{s" in k] or ["none"])
    assert post(api, events).status_code == 202
    assert post(api, events).status_code == 202
    assert entries(sync_redis, settings) == once_each(events)


def test_a_keyed_retry_after_a_wrong_type_writes_only_the_refused_part(
    api: ApiClient, sync_redis: redis.Redis, settings: Settings, clock: FakeClock
) -> None:
    events = batch_of(clock, 40)
    broken = stream_key(settings, "E1")
    sync_redis.set(broken, "x")
    assert post(api, events).status_code == 503
    sync_redis.delete(broken)
    assert post(api, events).status_code == 202
    assert entries(sync_redis, settings) == once_each(events)


# -- the Python producer -------------------------------------------------------------------------


def test_the_producer_sends_a_batch_with_a_key_once(
    sync_redis: redis.Redis, settings: Settings, clock: FakeClock
) -> None:
    events = batch_of(clock, 30)
    producer = make_producer(sync_redis, settings, clock=clock)
    # an earlier attempt wrote the home shard's part only
    batch = plan(Deployment.build(settings), as_written(events), "import-1", 60)
    before = write_sync(sync_redis, dataclasses.replace(batch, rest=[]))
    assert producer.send_batch(events, key="import-1") == 30
    assert producer.send_batch(events, key="import-1") == 30
    assert producer.sent == 60 and producer.written == 30 - before
    assert entries(sync_redis, settings) == once_each(events)
    with pytest.raises(IdempotencyKeyError, match="another request body"):
        producer.send_batch(events[:3], key="import-1")
    with pytest.raises(IdempotencyKeyError, match="empty"):
        producer.send_batch(events, key="")
    # buffered events, flushed with a key
    for event in events[:5]:
        producer.send_fields({**event, "cid": f"F{event['cid']}"})
    assert producer.flush(key="import-2") == 5
    assert producer.flush(key="import-2") == 0  # nothing buffered
    assert sum(entries(sync_redis, settings).values()) == 35


def test_a_failed_keyed_flush_keeps_its_batch_for_the_retry(
    sync_redis: redis.Redis, settings: Settings, clock: FakeClock
) -> None:
    events = batch_of(clock, 30)
    producer = make_producer(sync_redis, settings, clock=clock)
    broken = stream_key(settings, "E2")
    sync_redis.set(broken, "x")
    with pytest.raises(Exception, match=r"holds a string, not a stream") as failed:
        producer.send_batch(events, key="import-3")
    assert broken in str(failed.value)
    sync_redis.delete(broken)
    assert producer.flush() == 30  # the same batch, with its key
    assert entries(sync_redis, settings) == once_each(events)


def test_a_raw_entry_written_twice_is_two_events_for_every_model(
    aio: Loop, api: ApiClient, sync_redis: redis.Redis, settings: Settings, clock: FakeClock
) -> None:
    """A raw XADD producer that retries gets at-least-once (docs/delivery.md): the same
    fields written twice are two entries, and every model counts both."""
    fields = {"cid": "R1", "gender": "kids", "ts": str(clock())}
    for _ in range(2):
        sync_redis.xadd(stream_key(settings, "R1"), fields)
    process(aio, clock)
    answers = api.get("/v1/clients/R1").json()["models"]
    assert answers["top"]["scores"] == {"kids": 2}
    assert answers["top7d"]["scores"] == {"kids": 2}
    assert answers["last"]["gender"] == "kids"


# -- records renewed by every attempt (issue 27, finding 4) ---------------------------------------


def records_of(sync_redis: redis.Redis, key: str) -> list[bytes]:
    """Every record of ``key``: one per shard part written, and the claim."""
    return sorted(sync_redis.keys(f"genderd:*idem:{digest(key)}"))


def test_every_attempt_renews_every_record_of_its_parts(
    sync_redis: redis.Redis, settings: Settings, clock: FakeClock
) -> None:
    """An early attempt wrote one part; its record must not expire before those of the parts
    a later attempt wrote: a repeat after the early record's lifetime, but within the later
    attempt's, writes nothing."""
    ttl_s = 60
    events = batch_of(clock, 40)
    batch = plan(Deployment.build(settings), as_written(events), KEY, ttl_s)
    assert write_sync(sync_redis, dataclasses.replace(batch, rest=batch.rest[:1])) > 0
    early = records_of(sync_redis, KEY)
    assert len(early) == 2  # the first part's record and the claim
    for record in early:  # as if the early attempt were ttl_s - 0.2 s ago
        sync_redis.pexpire(record, 200)
    sync_redis.set("probe", 1, px=200)

    assert 0 < write_sync(sync_redis, batch) < len(events)  # the later attempt
    every = records_of(sync_redis, KEY)
    assert len(every) == len(batch.rest) + 1
    assert all(sync_redis.pttl(record) > (ttl_s - 5) * 1000 for record in every)
    wait_until(lambda: not sync_redis.exists("probe"), "the early attempt's lifetime")
    assert write_sync(sync_redis, batch) == 0  # nothing written a second time
    assert entries(sync_redis, settings) == once_each(events)


def test_a_refusal_says_what_was_written_when_a_part_had_lost_its_record(
    api: ApiClient, sync_redis: redis.Redis, settings: Settings, clock: FakeClock
) -> None:
    """Records lost by a failover (or outlived by milliseconds on Cluster): the parts that
    find none write another body's events before a part that finds the first body refuses
    it. The 422 says how many, never "nothing was written"."""
    first = batch_of(clock, 40, "A")
    assert post(api, first).status_code == 202
    every = records_of(sync_redis, KEY)
    kept = every[0] if b"{s" in every[0] else every[1]  # one shard part's record survives
    sync_redis.delete(*[record for record in every if record != kept])
    other = [{**event, "gender": "male"} for event in first]  # another body, the same shards
    response = post(api, other)
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["type"] == "idempotency_key_reused"
    written = sum(entries(sync_redis, settings).values()) - len(first)
    assert 0 < written < len(other)
    assert f"{written} of its {len(other)} events were written" in problem["msg"]
    assert "nothing was written" not in problem["msg"]
    # a body refused by every part: nothing was written, and it says so
    refused = post(api, batch_of(clock, 3, "C"))
    assert refused.status_code == 422 and "; nothing was written" in refused.text
