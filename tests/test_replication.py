"""Acknowledged means replicated, when asked (SPEC §12): ``GENDERD_INGEST_REPLICAS``.

A bundled master with one replica (``--replicaof``), both started on free ports and stopped by
pid; the replica is paused with SIGSTOP (and resumed with SIGCONT) to make it miss its ack.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydantic
import pytest
import redis

from genderd.api import create_app
from genderd.bundled import BundledServer, find_binary, free_port, replica_of, wait_in_sync
from genderd.keys import Keys
from genderd.settings import Settings
from genderd.transport import async_client

from .support.api_helpers import ApiClient
from .support.factories import make_reader, make_worker

SHARDS = 4


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BundledServer, BundledServer]]:
    binary = find_binary(os.environ.get("GENDERD_REDIS_SERVER"))
    data: Path = tmp_path_factory.mktemp("replicated")
    with BundledServer(binary, free_port(), data / "master", persistent=False) as master:
        with replica_of(binary, master, data / "replica") as replica:
            wait_in_sync(master.port, 1)
            yield master, replica


@pytest.fixture
def master(pair: tuple[BundledServer, BundledServer]) -> Iterator[BundledServer]:
    client = redis.Redis(port=pair[0].port)
    client.flushall()
    client.close()
    wait_in_sync(pair[0].port, 1)
    yield pair[0]


@pytest.fixture
def replica(pair: tuple[BundledServer, BundledServer]) -> BundledServer:
    return pair[1]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    created = asyncio.new_event_loop()
    yield created
    created.close()


def app_on(master: BundledServer, loop: asyncio.AbstractEventLoop, **settings: object) -> ApiClient:
    chosen = Settings(redis_url=master.url, shards=SHARDS, **settings)  # type: ignore[arg-type]
    return ApiClient(create_app(chosen), loop)


def entries(server: BundledServer) -> int:
    """Every entry in the shard streams of ``server`` (master or replica)."""
    client = redis.Redis(port=server.port)
    try:
        return sum(int(client.xlen(Keys().stream(shard))) for shard in range(SHARDS))
    finally:
        client.close()


def batch(n: int, tag: str = "c") -> dict[str, object]:
    return {
        "events": [{"cid": f"{tag}{i}", "gender": "female" if i % 2 else "male"} for i in range(n)]
    }


@pytest.mark.slow
def test_a_202_means_the_replica_has_the_events(
    master: BundledServer, replica: BundledServer, loop: asyncio.AbstractEventLoop
) -> None:
    api = app_on(master, loop, ingest_replicas=1)
    try:
        answer = api.post("/v1/events", json=batch(40))
        assert answer.status_code == 202 and answer.json() == {"accepted": 40}
        # on the replica at the moment of the 202, not eventually
        assert entries(replica) == 40
    finally:
        api.close()


@pytest.mark.slow
def test_a_paused_replica_makes_ingest_503_and_a_keyed_retry_writes_nothing_twice(
    master: BundledServer, replica: BundledServer, loop: asyncio.AbstractEventLoop
) -> None:
    api = app_on(master, loop, ingest_replicas=1, ingest_wait_ms=200)
    headers = {"Idempotency-Key": "order-17"}
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        refused = api.post("/v1/events", json=batch(30), headers=headers)
        assert refused.status_code == 503
        assert refused.headers["retry-after"]
        assert "short of replicas: the events reached 0 of 1" in refused.json()["detail"]
        assert entries(master) == 30  # written on the master, not acknowledged
        # without replicas asked for, the same master answers 202 meanwhile
        plain = app_on(master, loop)
        try:
            assert plain.post("/v1/events", json=batch(5, "p")).status_code == 202
        finally:
            plain.close()
    finally:
        os.kill(replica.pid, signal.SIGCONT)
    retried = api.post("/v1/events", json=batch(30), headers=headers)
    try:
        assert retried.status_code == 202 and retried.json() == {"accepted": 30}
        assert entries(master) == 35 and entries(replica) == 35  # nothing twice
    finally:
        api.close()


@pytest.mark.slow
def test_more_replicas_asked_than_the_master_has_is_503_every_time(
    master: BundledServer, loop: asyncio.AbstractEventLoop
) -> None:
    api = app_on(master, loop, ingest_replicas=2, ingest_wait_ms=50)
    try:
        for _ in range(2):
            answer = api.post("/v1/events", json=batch(3))
            assert answer.status_code == 503
            assert "reached 1 of 2" in answer.json()["detail"]
    finally:
        api.close()


def test_the_wait_must_end_before_the_api_call_times_out() -> None:
    with pytest.raises(pydantic.ValidationError, match="GENDERD_INGEST_WAIT_MS"):
        Settings(ingest_replicas=1, ingest_wait_ms=1000, api_timeout_ms=1000)
    assert Settings(ingest_replicas=1, ingest_wait_ms=999, api_timeout_ms=1000).ingest_replicas
    assert Settings().ingest_replicas == 0


@pytest.mark.slow
def test_api_and_worker_keep_working_when_the_urls_server_is_replaced_by_a_promoted_replica(
    tmp_path: Path,
) -> None:
    """The documented hand failover of one server behind a stable address: the master dies;
    its replica is promoted (REPLICAOF NO ONE); a server on the master's address takes a copy
    from it and is promoted in turn. The API and a worker, never restarted, carry on."""
    binary = find_binary(os.environ.get("GENDERD_REDIS_SERVER"))
    old = BundledServer(binary, free_port(), tmp_path / "old", persistent=False).start()
    replica = replica_of(binary, old, tmp_path / "replica").start()
    made: list[BundledServer] = [old, replica]
    settings = Settings(
        redis_url=old.url,
        shards=SHARDS,
        block_ms=50,
        claim_idle_ms=200,
        ingest_replicas=1,
        ingest_wait_ms=500,
    )

    def command(server: BundledServer, *args: object) -> None:
        client = redis.Redis(port=server.port)
        client.execute_command(*args)  # type: ignore[no-untyped-call]
        client.close()

    def replace() -> None:
        old.kill()
        command(replica, "REPLICAOF", "NO", "ONE")
        new = BundledServer(
            binary,
            old.port,
            tmp_path / "new",
            persistent=False,
            extra_args=["--replicaof", "127.0.0.1", str(replica.port)],
        )
        made.append(new.start())
        wait_in_sync(replica.port, 1)
        command(new, "REPLICAOF", "NO", "ONE")
        command(replica, "REPLICAOF", "127.0.0.1", str(new.port))  # the new master's replica
        wait_in_sync(new.port, 1)

    async def scenario() -> None:
        app = create_app(settings)
        client = async_client(settings)
        worker = make_worker(client, "top", settings)
        await asyncio.to_thread(wait_in_sync, old.port, 1)
        await worker.ensure_groups()
        running = asyncio.create_task(worker.run())
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test"
            ) as http,
        ):
            assert (await http.post("/v1/events", json=batch(10))).status_code == 202
            await asyncio.to_thread(replace)
            codes = []
            for _ in range(50):  # the first calls may meet the connections the kill broke
                codes.append((await http.post("/v1/events", json=batch(10, "n"))).status_code)
                if codes[-1] == 202:
                    break
                await asyncio.sleep(0.1)
            assert codes[-1] == 202 and set(codes) <= {202, 503}, codes
            assert (await http.get("/readyz")).status_code == 200
        reader = make_reader(client, settings)
        cids = [f"c{i}" for i in range(10)] + [f"n{i}" for i in range(10)]
        for _ in range(300):
            answers = await reader.lookup_many(cids)
            if all(a["top"] is not None for a in answers):
                break
            await asyncio.sleep(0.1)
        assert [a["top"] and a["top"].scores for a in answers] == [  # type: ignore[attr-defined]
            {"female" if i % 2 else "male": 1} for i in range(10)
        ] * 2
        worker.stop()
        await running
        await client.aclose()

    try:
        asyncio.run(scenario())
    finally:
        for server in made:
            server.stop()
