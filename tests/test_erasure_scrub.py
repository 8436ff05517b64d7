"""The scrub of erased clients' entries (SPEC §9 amended, issue 27 finding 16): the erasure
answers before it, one pass serves every pending erasure, nothing comes back meanwhile, a
scrubber killed -9 anywhere is taken over, progress is visible, workers run it."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from typing import Any

import pytest
import redis

from genderd import erasure
from genderd.clock import wall_clock_ms
from genderd.deployment import Deployment, open_deployment_sync
from genderd.erasure import records, scrub
from genderd.keys import Keys, digest, shard_of
from genderd.transport import Links

from .support.api_helpers import MakeApi, drain
from .support.commands import cli
from .support.factories import make_reader, make_worker
from .support.runtime import FakeClock, Loop
from .test_erasure import _raw_mentions

KEYS = Keys()
WAIT_S = 30.0  # the longest a condition is waited for (a lease runs out in LEASE_MS)


def _write(sync_redis: redis.Redis, settings: Any, rows: list[tuple[str, str]]) -> None:
    """XADD (cid, gender) rows to their shard streams, in order."""
    pipe = sync_redis.pipeline(transaction=False)
    for cid, gender in rows:
        pipe.xadd(KEYS.stream(shard_of(cid, settings.shards)), {"cid": cid, "gender": gender})
    pipe.execute()


def _deployment(aio: Loop, clock: FakeClock) -> tuple[Deployment, Any]:
    return Deployment.build(aio.settings, clock), Links.over(aio.client).fast


def _passes(sync_redis: redis.Redis, settings: Any) -> list[int]:
    return [int(sync_redis.hget(KEYS.scrub(s), "pass") or 0) for s in range(settings.shards)]


def _status(aio: Loop, clock: FakeClock, erasure_id: str) -> erasure.ErasureStatus:
    deployment, transport = _deployment(aio, clock)
    found = aio.run(erasure.status(transport, deployment, erasure_id))
    assert found is not None
    return found


def test_delete_answers_before_the_scrub_and_the_client_is_gone_at_once(
    aio: Loop, make_api: MakeApi, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    """No worker runs: DELETE answers 202, the client has no answer and no key at once, its
    entries wait in the stream under markers that do not expire before the scrub is done."""
    settings = aio.settings
    _write(sync_redis, settings, [("C1", "male"), ("C2", "kids"), ("C1", "female")])
    drain(aio.loop, aio.client, settings, clock)
    api = make_api()
    response = api.request("DELETE", "/v1/clients/C1")
    assert response.status_code == 202 and response.json()["keys"] == 2  # hash, a bucket
    assert api.get("/v1/clients/C1").status_code == 404
    assert api.get("/v1/clients/C2").status_code == 200
    shard = shard_of("C1", settings.shards)
    assert not sync_redis.exists(KEYS.result(shard, "C1"))
    assert len(_raw_mentions(aio.settings.redis_url or "", settings, "C1")) == 2  # not yet
    for s in range(settings.shards):  # no expiry while the scrub is to come
        assert sync_redis.pttl(KEYS.erased(s, digest("C1"))) == -1
        assert sync_redis.pttl(KEYS.erasures(s)) == -1

    _write(sync_redis, settings, [("C1", "kids")])  # after the erasure: new data
    deployment, transport = _deployment(aio, clock)
    aio.run(erasure.Scrubber(transport, deployment, "test").drain())
    [kept] = _raw_mentions(aio.settings.redis_url or "", settings, "C1")  # the new one only
    stream, entry_id = kept.split()
    [(_, fields)] = sync_redis.xrange(stream, entry_id, entry_id)
    assert fields[b"gender"] == b"kids"
    lifetime = records.lifetime_ms(deployment)
    for s in range(settings.shards):  # now they expire: the retention plus a day
        assert lifetime - 60_000 < sync_redis.pttl(KEYS.erased(s, digest("C1"))) <= lifetime
        assert lifetime - 60_000 < sync_redis.pttl(KEYS.erasures(s)) <= lifetime
    assert api.get(response.json()["status"]).json()["entries"] == 2


def test_many_erasures_share_one_pass_over_each_stream(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thirty erasures (thirty DELETEs) pending when the scrub starts: one pass per shard,
    as many steps as for one erasure; each erasure's counts are its own."""
    monkeypatch.setattr(scrub, "STEP_COUNT", 10)
    settings = aio.settings
    gone = [f"G{n}" for n in range(30)]
    rows = [(cid, "male") for cid in gone for _ in range(2)]
    rows += [(f"K{n}", "female") for n in range(400)]
    _write(sync_redis, settings, rows)
    deployment, transport = _deployment(aio, clock)
    made = [aio.run(erasure.erase(transport, deployment, [cid])) for cid in gone]
    lengths = [sync_redis.xlen(KEYS.stream(s)) for s in range(settings.shards)]

    scrubber = erasure.Scrubber(transport, deployment, "test")
    aio.run(scrubber.drain())

    assert _passes(sync_redis, settings) == [1] * settings.shards
    # one pass: each stream read once, 10 entries a step, and per shard a step that ends the
    # stream's phase, one for the (empty) aside and dead-letter streams and one for the tidy
    assert scrubber.steps <= sum(n // 10 + 4 for n in lengths)
    assert sum(sync_redis.xlen(KEYS.stream(s)) for s in range(settings.shards)) == 400
    for done in made:
        found = _status(aio, clock, done.id)
        assert (found.state, found.entries, found.clients) == (erasure.DONE, 2, 1)


def test_an_erasure_made_during_a_pass_waits_for_the_next_one_and_loses_nothing(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pass has read past the second client's entries when it is erased: the next pass
    deletes them (a pass serves the erasures pending when it started)."""
    monkeypatch.setattr(scrub, "STEP_COUNT", 10)
    settings = replace_shards(aio, 1)
    rows = [("B", "kids")] + [(f"K{n}", "female") for n in range(100)] + [("A", "male")]
    _write(sync_redis, settings, rows)
    deployment = Deployment.build(settings, clock)
    transport = Links.over(aio.client).fast
    first = aio.run(erasure.erase(transport, deployment, ["A"]))
    scrubber = erasure.Scrubber(transport, deployment, "test")
    for _ in range(3):  # 30 entries read: B's is behind
        aio.run(scrubber.step(0))
    second = aio.run(erasure.erase(transport, deployment, ["B"]))
    aio.run(scrubber.drain())

    assert _passes(sync_redis, settings) == [2]
    assert sync_redis.xlen(KEYS.stream(0)) == 100
    for done in (first, second):
        found = aio.run(erasure.status(transport, deployment, done.id))
        assert found is not None and (found.state, found.entries) == (erasure.DONE, 1)


def replace_shards(aio: Loop, shards: int) -> Any:
    """The test's settings with ``shards`` shards (the server is flushed per test)."""
    return aio.settings.model_copy(update={"shards": shards})


KILL_CLIENTS = 600  # enough pending clients per shard for a tidy of several pages


@pytest.mark.fault
@pytest.mark.parametrize(("point", "after"), [("step", 7), ("tidy", 2), ("finish", 1)])
def test_a_scrubber_killed_9_anywhere_is_taken_over_and_counts_everything_once(
    aio: Loop, sync_redis: redis.Redis, redis_url: str, point: str, after: int
) -> None:
    """`genderd erase --status ID --wait` scrubbing alone, killed -9 after a step, in the
    middle of a tidy, or between recording a shard done and forgetting it there; another
    scrubber takes over once the lease runs out, in the same pass, and the counts are exact."""
    settings, clock = aio.settings, FakeClock(wall_clock_ms())
    gone = [f"G{n}" for n in range(KILL_CLIENTS)]
    _write(sync_redis, settings, [(cid, "male") for cid in gone])
    _write(sync_redis, settings, [(f"K{n}", "kids") for n in range(50)])
    open_deployment_sync(sync_redis, settings)
    deployment, transport = _deployment(aio, clock)
    done = aio.run(erasure.erase(transport, deployment, gone))

    env = {k: v for k, v in os.environ.items() if not k.startswith("GENDERD_")}
    env.update(GENDERD_REDIS_URL=redis_url, GENDERD_SHARDS=str(settings.shards))
    command = ["erase", "--status", done.id, "--wait"]
    killed = subprocess.run(
        [sys.executable, "-m", "tests.support.doomed_scrub", point, str(after), *command],
        env=env,
        capture_output=True,
        timeout=WAIT_S,
    )
    assert killed.returncode == -9, killed.stderr.decode()
    assert _status(aio, clock, done.id).state == erasure.SCRUBBING
    assert sync_redis.get(KEYS.scrubber) is not None  # the dead process's lease, running out

    found = aio.run(asyncio.wait_for(erasure.wait(transport, deployment, done.id, "heir"), WAIT_S))
    assert found is not None and found.state == erasure.DONE
    assert (found.entries, found.dead_letters, found.keys) == (KILL_CLIENTS, 0, 0)
    assert _passes(sync_redis, settings) == [1] * settings.shards  # taken over, not restarted
    assert sum(sync_redis.xlen(KEYS.stream(s)) for s in range(settings.shards)) == 50
    for s in range(settings.shards):
        assert sync_redis.hlen(KEYS.scrub_clients(s)) == 0
        assert sync_redis.zcard(KEYS.scrub_erasures(s)) == 0
        assert [f for f in sync_redis.hkeys(KEYS.scrub(s)) if done.id.encode() in f] == []


def test_status_shows_progress_on_the_command_line(
    aio: Loop, sync_redis: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scrub, "STEP_COUNT", 10)
    settings, clock = aio.settings, FakeClock(wall_clock_ms())
    _write(sync_redis, settings, [("C1", "male")] + [(f"K{n}", "kids") for n in range(200)])
    made = cli(redis_url, settings, "erase", "C1")
    assert made.exit_code == 0, made.output
    erasure_id = made.stderr.split("erasure ", 1)[1].split(":", 1)[0]
    assert f"genderd erase --status {erasure_id}" in made.stderr

    deployment, transport = _deployment(aio, clock)
    scrubber = erasure.Scrubber(transport, deployment, "test")
    for _ in range(3):
        aio.run(scrubber.step(shard_of("K1", settings.shards)))
    shown = cli(redis_url, settings, "erase", "--status", erasure_id)
    assert shown.exit_code == 0, shown.output
    assert f"erasure {erasure_id}: scrubbing, 0/{settings.shards} shards scrubbed" in shown.stdout
    assert f"shard {shard_of('K1', settings.shards)}: pass 1, events, 30 read" in shown.stdout
    assert f"1 client (digest {digest('C1')}): 2 keys" not in shown.stdout  # no key: no event
    listed = cli(redis_url, settings, "erase", "--status")
    assert erasure_id in listed.stdout and "scrubbing" in listed.stdout

    waited = cli(redis_url, settings, "erase", "--status", erasure_id, "--wait", "--json")
    assert waited.exit_code == 0, waited.output
    final = json.loads(waited.stdout)
    assert (final["state"], final["entries"], final["digest"]) == ("done", 1, digest("C1"))
    assert "C1" not in waited.stdout
    unknown = cli(redis_url, settings, "erase", "--status", "0123456789abcdef")
    assert unknown.exit_code == 1 and "no erasure '0123456789abcdef'" in unknown.stderr
    both = cli(redis_url, settings, "erase", "C1", "--status", erasure_id)
    assert both.exit_code == 2 and "--status takes an erasure id" in both.output


def test_the_workers_scrub_one_process_at_a_time(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    """Two workers run (as under `genderd up` or any orchestrator); an erasure is made; its
    scrub completes with nothing else running, stepped by the one holding the lease."""
    settings = aio.settings
    _write(sync_redis, settings, [("C1", "male"), ("C2", "kids")])
    deployment, transport = _deployment(aio, clock)
    workers = [
        make_worker(aio.client, name, settings, clock=clock, consumer=f"w-{name}")
        for name in ("top", "last")
    ]

    async def scenario() -> erasure.ErasureStatus | None:
        running = [asyncio.create_task(worker.run()) for worker in workers]
        try:
            done = await erasure.erase(transport, deployment, ["C1"])
            while True:  # the workers' scrubbers do it
                found = await erasure.status(transport, deployment, done.id)
                if found is None or found.state == erasure.DONE:
                    holder = await aio.client.get(KEYS.scrubber)
                    assert holder in (b"w-top", b"w-last")
                    return found
                await asyncio.sleep(0.05)
        finally:
            for worker in workers:
                worker.stop()
            await asyncio.gather(*running)

    found = aio.run(asyncio.wait_for(scenario(), WAIT_S))
    assert found is not None and found.entries == 1
    assert sync_redis.get(KEYS.scrubber) is None  # released when they stopped
    [got] = aio.run(make_reader(aio.client, settings, clock=clock).lookup_many(["C2"]))
    assert got["top"].scores == {"kids": 1} and not sync_redis.exists(
        KEYS.result(shard_of("C1", settings.shards), "C1")
    )


def test_erase_with_a_key_of_the_wrong_type_says_so_in_one_line(
    aio: Loop,
    sync_redis: redis.Redis,
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Finding 9 (erase): any genderd key of the wrong type is one line naming it, before
    anything is deleted; a worker's scrubber logs it and carries on once it is removed."""
    monkeypatch.setattr(scrub, "BACKOFF_S", 0.05)
    settings, clock = aio.settings, FakeClock(wall_clock_ms())
    _write(sync_redis, settings, [("C1", "male")])
    drain(aio.loop, aio.client, settings, clock)
    wrong_types = [
        (KEYS.stream(3), "SET", "string", "stream"),  # the reproduction: a string over a stream
        (KEYS.erasures(1), "HSET", "hash", "string"),  # a hash over a sentinel
        (KEYS.scrub(2), "SET", "string", "hash"),
        (KEYS.scrub_erasures(0), "SET", "string", "zset"),
    ]
    for key, command, held, kept in wrong_types:
        sync_redis.execute_command(command, key, *(["f", "v"] if command == "HSET" else ["x"]))
        refused = cli(redis_url, settings, "erase", "C1")
        # exit 1, as every command: the invocation is fine once the key is removed
        assert refused.exit_code == 1, refused.output
        assert refused.output == f"Error: {key} holds a {held}, not a {kept}\n"
        assert sync_redis.exists(KEYS.result(shard_of("C1", settings.shards), "C1"))
        sync_redis.delete(key)

    deployment, transport = _deployment(aio, clock)
    done = aio.run(erasure.erase(transport, deployment, ["C1"]))
    sync_redis.set(KEYS.stream_aside(0), "x")
    stuck = cli(redis_url, settings, "erase", "--status", done.id, "--json")
    assert json.loads(stuck.stdout)["state"] == "scrubbing"

    async def state() -> str | None:
        found = await erasure.status(transport, deployment, done.id)
        return None if found is None else found.state

    async def scrub_a_while(stop: asyncio.Event) -> None:
        runner = asyncio.create_task(erasure.Scrubber(transport, deployment, "w").run(stop))
        while "scrubbing failed" not in caplog.text:
            await asyncio.sleep(0.02)
        sync_redis.delete(KEYS.stream_aside(0))  # the operator removes it
        while await state() != erasure.DONE:
            await asyncio.sleep(0.05)
        stop.set()
        await runner

    with caplog.at_level(logging.ERROR, logger="genderd.erasure"):
        aio.run(asyncio.wait_for(scrub_a_while(asyncio.Event()), WAIT_S))
    assert f"WRONGTYPE {KEYS.stream_aside(0)} holds a string, not a stream" in caplog.text
