"""Erasing a client (SPEC §9): nothing of it is left, nothing brings it back (batches in hand,
stopped workers, reclaims, stale batches, replay, re-drive), later events are new data."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from genderd import deadletters, erasure, replay, streams
from genderd.cli import main
from genderd.clock import wall_clock_ms
from genderd.deployment import Deployment
from genderd.keys import Keys, digest, shard_of
from genderd.transport import Links

from .support import oracle, scenario
from .support.api_helpers import MakeApi, cid_path
from .support.factories import make_reader, make_worker, stopped
from .support.runtime import FakeClock, Loop
from .test_deadletter import dead_entries

HOUR = 3_600_000
GONE = "erase-me"
KEPT = "keep-me"


def _write(sync_redis: redis.Redis, settings: Any, cid: str, gender: str, ts: int) -> str:
    stream = Keys(settings.prefix).stream(shard_of(cid, settings.shards))
    return sync_redis.xadd(stream, {"cid": cid, "gender": gender, "ts": str(ts)}).decode()


def _drain(aio: Loop, clock: FakeClock) -> dict[str, Any]:
    outcomes = {}
    for model in aio.registry:
        worker = make_worker(aio.client, model, aio.settings, clock=clock)
        aio.run(worker.ensure_groups())
        outcomes[model.name] = aio.run(worker.drain())
    return outcomes


def _erase(aio: Loop, clock: FakeClock, *cids: str) -> erasure.ErasureStatus:
    """Erase ``cids`` and scrub until done; the erasure's final status."""
    deployment = Deployment.build(aio.settings, clock)
    transport = Links.over(aio.client).fast

    async def go() -> erasure.ErasureStatus | None:
        done = await erasure.erase(transport, deployment, cids)
        await erasure.Scrubber(transport, deployment, "test").drain()
        return await erasure.status(transport, deployment, done.id)

    found = aio.run(go())
    assert found is not None and found.state == erasure.DONE
    return found


def _mark_only(aio: Loop, clock: FakeClock, *cids: str) -> erasure.Erasure:
    """Erase ``cids`` without scrubbing (as when no worker runs yet)."""
    deployment = Deployment.build(aio.settings, clock)
    return aio.run(erasure.erase(Links.over(aio.client).fast, deployment, cids))


def _traces(sync_redis: redis.Redis, settings: Any, cid: str) -> list[str]:
    """Every key, stream entry and dead letter that names ``cid`` (keys end with the id)."""
    keys = Keys(settings.prefix)
    found = [
        k.decode() for k in sync_redis.scan_iter(count=1000) if k.endswith(b":" + cid.encode())
    ]
    for shard in range(settings.shards):
        for stream in (keys.stream(shard), keys.dead(shard)):
            for entry_id, fields in sync_redis.xrange(stream):
                if fields.get(b"cid") == cid.encode():
                    found.append(f"{stream} {entry_id.decode()}")
    return found


def _answers(aio: Loop, clock: FakeClock, cid: str) -> dict[str, Any]:
    [got] = aio.run(make_reader(aio.client, aio.settings, clock=clock).lookup_many([cid]))
    return got


def test_erase_removes_every_key_entry_and_dead_letter_and_logs_the_digest(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    settings, now = aio.settings, clock.now_ms
    for gender, ts in [("male", now), ("male", now - 1), ("female", now - 24 * HOUR)]:
        _write(sync_redis, settings, GONE, gender, ts)
    _write(sync_redis, settings, GONE, "robot", now)  # dead-lettered by every model
    _write(sync_redis, settings, KEPT, "kids", now)
    _drain(aio, clock)
    assert all(_answers(aio, clock, GONE).values())
    assert len(dead_entries(sync_redis, settings)) == len(aio.registry)

    with caplog.at_level(logging.INFO, logger="genderd.erasure"):
        done = _erase(aio, clock, GONE)

    # the result hash (every model's answer and state), top7d's buckets of two days
    assert (done.keys, done.entries, done.dead_letters) == (3, 4, len(aio.registry))
    assert (done.clients, done.digest) == (1, digest(GONE))
    assert _traces(sync_redis, settings, GONE) == []
    assert _answers(aio, clock, GONE) == dict.fromkeys(aio.registry.names())
    assert _answers(aio, clock, KEPT)["last"].gender == "kids"
    assert dead_entries(sync_redis, settings) == []
    assert f"erasure {done.id}: client {digest(GONE)}: 3 keys deleted" in caplog.text
    assert f"erasure {done.id} done: 4 stream entries, {len(aio.registry)} dead letters" in (
        caplog.text
    )
    assert GONE not in caplog.text  # the proof names the digest, never the id
    for key in sync_redis.scan_iter(count=1000):  # nor does any key or record
        assert GONE.encode() not in key
        if sync_redis.type(key) == b"hash":
            assert not any(GONE.encode() in v for v in sync_redis.hgetall(key).values())
    again = _erase(aio, clock, GONE)  # and an unknown client: zero counts
    assert (again.keys, again.entries, again.dead_letters) == (0, 0, 0)


def test_batches_in_hand_reclaims_and_replay_do_not_bring_it_back_and_later_events_apply(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    settings, keys = aio.settings, Keys(aio.settings.prefix)
    shard = shard_of(GONE, settings.shards)
    for gender in ("male", "male", "kids"):
        _write(sync_redis, settings, GONE, gender, clock.now_ms)
    in_hand = {}
    for model in aio.registry:  # one consumer per model read the batch, then stopped
        worker = make_worker(aio.client, model, settings, clock=clock, consumer="stopped")
        aio.run(worker.ensure_groups())
        entries = aio.run(
            streams.read_new(aio.client, keys.stream(shard), model.name, "stopped", 10, None)
        )
        assert len(entries) == 3
        in_hand[model.name] = (worker, entries)

    done = _erase(aio, clock, GONE)
    assert (done.keys, done.entries) == (0, 3)  # nothing applied yet; the entries are gone

    later = _write(sync_redis, settings, GONE, "female", clock.now_ms)
    for _worker, _entries in in_hand.values():  # the stopped consumers come back
        outcome = aio.run(_worker.processor.process(shard, _entries))
        assert (outcome.applied, outcome.erased) == (0, 3)
    assert not sync_redis.exists(keys.result(shard, GONE))
    for model in aio.registry:  # another consumer reclaims what the first one held
        other = make_worker(aio.client, model, settings, clock=clock, consumer="other")
        aio.run(other.reclaim(shard, min_idle_ms=0))
    outcomes = _drain(aio, clock)
    assert all(o.applied == 1 for o in outcomes.values())  # the event after the erasure
    got = _answers(aio, clock, GONE)
    assert got["last"].gender == "female" and got["last"].last_event_ts == clock.now_ms
    assert got["top"].scores == {"female": 1} and got["top7d"].scores == {"female": 1}
    assert [e[0].decode() for e in sync_redis.xrange(keys.stream(shard))] == [later]

    for name in ("top", "recency"):  # replay re-reads the stream: the erased stay erased
        worker = make_worker(aio.client, name, settings, clock=clock, consumer="replay")
        aio.run(stopped(aio.client, settings, name))
        aio.run(replay.replay(worker, force=True))
    got = _answers(aio, clock, GONE)
    assert got["top"].scores == {"female": 1} and got["recency"].gender == "female"
    assert scenario_pending(aio) == 0


def scenario_pending(aio: Loop) -> int:
    return aio.run(scenario.pending_and_lag(aio.client, aio.settings))[0]


def test_the_marker_alone_stops_workers_dead_letters_redrive_and_replay(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    """An erasure whose scrub has not run yet (no worker runs, or the scrub is at another
    shard): the entries are still in the stream, and still nothing comes back."""
    settings = aio.settings
    _write(sync_redis, settings, GONE, "unicorn", clock.now_ms)  # a dead letter before
    _drain(aio, clock)
    letters = aio.run(_all_letters(aio))
    assert len(letters) == len(aio.registry)
    for gender in ("male", "bad gender"):
        _write(sync_redis, settings, GONE, gender, clock.now_ms)

    _mark_only(aio, clock, GONE)
    assert len(_traces(sync_redis, settings, GONE)) == 3 + len(aio.registry)  # not scrubbed

    outcomes = _drain(aio, clock)  # workers that were stopped during the erasure
    assert all((o.applied, o.dead, o.erased) == (0, 0, 2) for o in outcomes.values())
    for name in ("top7d", "recency"):
        worker = make_worker(aio.client, name, settings, clock=clock, consumer="replay")
        aio.run(stopped(aio.client, settings, name))
        outcome = aio.run(replay.replay(worker, force=True))
        assert (outcome.applied, outcome.dead, outcome.erased) == (0, 0, 3)
    # a re-drive once unicorn is a gender: the entry is valid, its client erased since
    deployment = Deployment.build(
        settings.model_copy(update={"genders": (*settings.genders, "unicorn")}), clock
    )
    links = Links.over(aio.client)
    redriven = aio.run(deadletters.redrive(aio.client, links.fast, deployment, letters))
    assert redriven.written == [] and len(redriven.erased) == 1
    assert _answers(aio, clock, GONE) == dict.fromkeys(aio.registry.names())
    assert len(dead_entries(sync_redis, settings)) == 0  # the re-drive deleted the copies
    stats = sync_redis.hgetall(Keys(settings.prefix).stats(shard_of(GONE, settings.shards)))
    assert int(stats[b"top:erased"]) == 2  # the worker dropped two
    assert int(stats[b"top7d:erased"]) == 3  # the replay starts the counts again: its three


async def _all_letters(aio: Loop) -> list[deadletters.DeadLetter]:
    deployment = Deployment.build(aio.settings)
    return [letter async for letter in deadletters.scan(aio.client, deployment)]


@hsettings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_schedule_brings_an_erased_client_back(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock, data: st.DataObject
) -> None:
    """Events, then an erasure at a random step of a crashy schedule (batches in hand, stale
    batches, reclaims by other consumers), with more events after it: every erased client
    answers exactly what the events written after its erasure say."""
    sync_redis.flushall()
    cids = ["a", "b", "c:1", "d"]
    event = st.builds(
        lambda cid, gender, hours: {"cid": cid, "gender": gender, "ts": str(clock.now_ms - hours)},
        st.sampled_from(cids),
        st.sampled_from(["female", "male", "kids"]),
        st.integers(0, 9 * 24).map(lambda hours: hours * HOUR),
    )
    before = data.draw(st.lists(event, max_size=25), label="before")
    after = data.draw(st.lists(event, max_size=10), label="after")
    gone = data.draw(st.sets(st.sampled_from(cids), min_size=1), label="erased")
    rnd = random.Random(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    consumers = data.draw(st.integers(1, 2), label="consumers")
    settings, registry = aio.settings, aio.registry
    written = aio.run(scenario.write(aio.client, settings, before))
    late: list[oracle.Ev] = []

    scrub_at_once = data.draw(st.booleans(), label="scrub at once")
    deployment = Deployment.build(settings, clock)
    transport = Links.over(aio.client).fast

    async def erase_then_write() -> None:
        await erasure.erase(transport, deployment, sorted(gone))
        if scrub_at_once:  # else the scrub runs after the schedule: the markers hold meanwhile
            await erasure.Scrubber(transport, deployment, "test").drain()
        late.extend(await scenario.write(aio.client, settings, after))

    aio.run(
        scenario.run_schedule(
            aio.client,
            settings,
            registry,
            clock,
            rnd,
            consumers,
            rnd.randint(0, 50),
            midway=erase_then_write,
        )
    )
    assert aio.run(scenario.pending_and_lag(aio.client, settings)) == (0, 0)
    aio.run(erasure.Scrubber(transport, deployment, "test").drain())
    got = aio.run(scenario.answers(aio.client, settings, registry, clock, cids))
    for cid, answer in zip(cids, got, strict=True):
        known = late if cid in gone else written + late
        want = scenario.expected(known, cid, clock.now_ms, clock.now_ms, settings.window_days)
        assert scenario.mismatches(answer, want) == [], cid
        if cid in gone and not any(e.cid == cid for e in late):
            assert _traces(sync_redis, settings, cid) == []


def test_delete_over_http_is_protected_like_ingest_and_its_status_gives_the_counts(
    aio: Loop, make_api: MakeApi, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    api = make_api(api_token="s3cret")
    auth = {"Authorization": "Bearer s3cret"}
    cid = "Ω shopper/1".replace(" ", "-")
    assert api.post("/v1/events", json={"cid": cid, "gender": "kids"}, headers=auth).is_success
    _drain(aio, clock)
    assert api.get(f"/v1/clients/{cid_path(cid)}").status_code == 200

    assert api.request("DELETE", f"/v1/clients/{cid_path(cid)}").status_code == 401
    assert api.request("DELETE", "/v1/clients/a%20b", headers=auth).status_code == 422
    response = api.request("DELETE", f"/v1/clients/{cid_path(cid)}", headers=auth)
    assert response.status_code == 202
    made = response.json()
    where = f"/v1/erasures/{made['id']}"
    assert made == {"id": made["id"], "cid": cid, "keys": 2, "state": "scrubbing", "status": where}
    assert response.headers["location"] == where
    assert api.get(f"/v1/clients/{cid_path(cid)}").status_code == 404  # at once
    assert api.get(where).status_code == 401  # protected like DELETE
    pending = api.get(where, headers=auth).json()
    assert (pending["state"], pending["keys"], pending["entries"]) == ("scrubbing", 2, 0)
    assert pending["shards_scrubbed"] == 0 and len(pending["scrubbing"]) == aio.settings.shards

    deployment = Deployment.build(aio.settings, clock)
    aio.run(erasure.Scrubber(Links.over(aio.client).fast, deployment, "test").drain())
    done = api.get(where, headers=auth).json()
    assert (done["state"], done["entries"], done["dead_letters"]) == ("done", 1, 0)
    assert (done["digest"], done["shards_scrubbed"], done["scrubbing"]) == (
        digest(cid),
        aio.settings.shards,
        [],
    )
    assert cid not in json.dumps(done)
    assert _traces(sync_redis, aio.settings, cid) == []
    unknown = api.request("DELETE", "/v1/clients/nobody", headers=auth)
    assert (unknown.status_code, unknown.json()["keys"]) == (202, 0)
    assert api.get("/v1/erasures/0123456789abcdef", headers=auth).status_code == 404
    assert api.get("/v1/erasures/..%2Fmodels", headers=auth).status_code == 404
    metrics = api.get("/metrics").text
    assert "genderd_erasures_total 2.0" in metrics
    assert 'genderd_erased_total{kind="keys"} 2.0' in metrics
    assert cid not in metrics and "nobody" not in metrics


def test_cli_erases_ids_from_arguments_and_a_file_in_one_pass(
    aio: Loop, sync_redis: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    clock = FakeClock(wall_clock_ms())  # the CLI reads the wall clock too
    settings = aio.settings
    cids = [f"c{n}" for n in range(30)]
    for cid in cids:
        _write(sync_redis, settings, cid, "male", clock.now_ms)
    _drain(aio, clock)
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(cids[1:20]) + "\n\n")
    env = {"GENDERD_REDIS_URL": redis_url, "GENDERD_SHARDS": "4"}
    done = CliRunner().invoke(
        main,
        ["erase", cids[0], "--file", str(ids), "--json", "--wait"],
        env=env,
        catch_exceptions=False,
    )
    assert done.exit_code == 0, done.output
    *rows, final = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["cid"] for r in rows] == cids[:20]
    assert all((r["keys"], r["digest"]) == (2, digest(r["cid"])) for r in rows)
    assert {r["erasure"] for r in rows} == {final["id"]}  # one erasure
    assert (final["state"], final["clients"], final["keys"], final["entries"]) == (
        "done",
        20,
        40,
        20,
    )
    assert f"erasure {final['id']}: 20 clients, 40 keys deleted" in done.stderr
    passes = {int(sync_redis.hget(Keys().scrub(shard), "pass") or 0) for shard in range(4)}
    assert passes == {1}  # one pass over each stream for the twenty clients
    for cid in cids:
        assert bool(_traces(sync_redis, settings, cid)) == (cid not in cids[:20])
    bad = CliRunner().invoke(main, ["erase", "ok", "not ok"], env=env)
    assert bad.exit_code == 2 and "argument 2: cid contains whitespace" in bad.output
    assert _traces(sync_redis, settings, "ok") == []


def _raw_mentions(redis_url: str, settings: Any, cid: str) -> list[str]:
    """Stream entries and dead letters with ``cid`` in any field value, read raw (redis-py's
    XRANGE reply is a dict, which keeps one value of a field given twice)."""
    raw = redis.Redis.from_url(redis_url)
    raw.set_response_callback("XRANGE", lambda response, **options: response)
    keys, found = Keys(settings.prefix), []
    try:
        for shard in range(settings.shards):
            for stream in (keys.stream(shard), keys.dead(shard)):
                for entry_id, fields in raw.xrange(stream):
                    if cid.encode() in fields:
                        found.append(f"{stream} {entry_id.decode()}")
    finally:
        raw.close()
    return found


def test_an_entry_naming_the_client_in_a_duplicate_cid_field_is_erased(
    aio: Loop, sync_redis: redis.Redis, redis_url: str, clock: FakeClock
) -> None:
    settings = aio.settings
    stream = Keys(settings.prefix).stream(shard_of(GONE, settings.shards))
    # the client named second: a duplicate field, dead-lettered by every model
    sync_redis.execute_command("XADD", stream, "*", "cid", KEPT, "gender", "male", "cid", GONE)
    _write(sync_redis, settings, GONE, "male", clock.now_ms)
    _drain(aio, clock)
    assert len(_raw_mentions(redis_url, settings, GONE)) == 2 + len(aio.registry)

    done = _erase(aio, clock, GONE)

    assert (done.entries, done.dead_letters) == (2, len(aio.registry))
    assert _raw_mentions(redis_url, settings, GONE) == []
