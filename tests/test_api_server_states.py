"""The HTTP API on servers that cannot do everything now (SPEC §5): a read replica serves
lookups (answers recomputed at read time, not written back), a server out of memory refuses
ingest with 503 while reads and the CLI keep working, and a loading server is a 503, never a
500. Nothing is lost once memory is freed."""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from genderd.bundled import BundledServer, find_binary, free_port
from genderd.cli import main
from genderd.clock import MS_PER_DAY
from genderd.settings import Settings
from genderd.transport import RedisLoadingError

from .support.api_helpers import ApiClient, MakeApi, gender_url, process, produce
from .support.factories import make_worker
from .support.runtime import FakeClock, Loop

HOUR = 3_600_000


@pytest.fixture
def replica(tmp_path: Path, redis_server: BundledServer, redis_url: str) -> Iterator[BundledServer]:
    """A read replica of the session's server, in sync."""
    server = BundledServer(find_binary(), free_port(), tmp_path, persistent=False).start()
    try:
        client = redis.Redis(port=server.port)
        client.replicaof("127.0.0.1", redis_server.port)
        deadline = time.monotonic() + 10
        while client.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not sync"
            time.sleep(0.05)
        client.close()
        yield server
    finally:
        server.stop()


def wait_replicated(replica: BundledServer, key: str) -> None:
    client = redis.Redis(port=replica.port)
    deadline = time.monotonic() + 10
    while not client.exists(key):
        assert time.monotonic() < deadline, f"{key} did not reach the replica"
        time.sleep(0.02)
    client.close()


def test_lookups_are_served_by_a_read_replica_right_at_read_time(
    make_api: MakeApi,
    aio: Loop,
    clock: FakeClock,
    settings: Settings,
    replica: BundledServer,
    sync_redis: redis.Redis,
) -> None:
    primary = make_api()
    produce(
        primary,
        [
            {"cid": "C7", "gender": "female", "ts": clock.now_ms - 6 * MS_PER_DAY},
            {"cid": "C7", "gender": "male", "ts": clock.now_ms - HOUR},
            {"cid": "C7", "gender": "male", "ts": clock.now_ms - 2 * HOUR},
        ],
    )
    process(aio, clock)
    sync_redis.set("marker", "1")
    wait_replicated(replica, "marker")

    read_clock = FakeClock(clock.now_ms)
    on_replica = make_api(read_clock=read_clock, redis_url=replica.url)
    assert on_replica.get("/readyz").status_code == 200
    answer = on_replica.get(gender_url("C7", "top7d")).json()
    assert (answer["gender"], answer["scores"]) == ("male", {"female": 1, "male": 2})

    # Seven days later the stored answer has expired: the replica recomputes it (no write).
    read_clock.advance(7 * MS_PER_DAY)
    result_key = f"genderd:{{s{zlib.crc32(b'C7') % settings.shards}}}:r:C7"
    stored = sync_redis.hgetall(result_key)
    for url in (gender_url("C7", "top7d"), "/v1/clients/C7"):
        response = on_replica.get(url)
        assert response.status_code in (200, 404), response.text
    answers = on_replica.get("/v1/clients/C7").json()["models"]
    assert answers["top7d"] is None  # out of the window now: right at read time
    assert answers["top"]["scores"] == {"female": 1, "male": 2}
    batch = on_replica.post("/v1/lookup", json={"cids": ["C7"], "model": "top7d"}).json()
    assert batch["results"][0]["gender"] is None
    assert sync_redis.hgetall(result_key) == stored  # computed, not written back
    # ingest on a replica: 503 (read-only), never 500
    refused = on_replica.post("/v1/events", json={"cid": "C8", "gender": "male"})
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json() == {"detail": "Redis is read-only (a replica); retry shortly"}


def test_out_of_memory_refuses_ingest_keeps_reads_and_loses_nothing(
    api: ApiClient,
    aio: Loop,
    clock: FakeClock,
    settings: Settings,
    sync_redis: redis.Redis,
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    produce(api, [{"cid": f"C{n}", "gender": "male", "ts": clock.now_ms - HOUR} for n in range(50)])
    worker = make_worker(aio.client, "top", settings, clock=clock)
    sync_redis.config_set("maxmemory", "1")
    try:
        refused = api.post("/v1/events", json={"cid": "C1", "gender": "female"})
        assert refused.status_code == 503
        assert refused.json() == {"detail": "Redis is out of memory; retry shortly"}
        assert api.get(gender_url("C1")).status_code == 404  # reads still answer
        runner = CliRunner()
        env = {"GENDERD_REDIS_URL": redis_url, "GENDERD_SHARDS": "4"}
        for args in (["status"], ["lookup", "C1"]):
            result = runner.invoke(main, args, env=env)
            assert result.exit_code in (0, 1) and "Traceback" not in result.output, args
            assert "OutOfMemoryError" not in result.output
        produced = runner.invoke(main, ["produce", "--count", "5", "--quiet"], env=env)
        assert produced.exit_code == 1
        assert "out of memory" in produced.output and "Traceback" not in produced.output
        # a worker started now waits, saying why, and retries
        with caplog.at_level(logging.WARNING, logger="genderd.worker"):
            running = aio.loop.create_task(worker.run())
            deadline = time.monotonic() + 20
            while "Redis is out of memory" not in caplog.text:
                assert time.monotonic() < deadline and not running.done(), caplog.text
                aio.run(asyncio.sleep(0.05))
        assert not running.done()
    finally:
        sync_redis.config_set("maxmemory", "0")
    deadline = time.monotonic() + 20
    while worker.totals.applied < 50:  # nothing lost once memory is freed
        assert time.monotonic() < deadline, worker
        aio.run(asyncio.sleep(0.05))
    worker.stop()
    aio.run(running)
    assert api.get(gender_url("C1")).json()["gender"] == "male"


def test_a_loading_server_is_a_503(api: ApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
    reader: Any = api.run(api.app.state.api.reader())

    async def loading(*args: Any, **kwargs: Any) -> Any:
        raise RedisLoadingError("Redis is loading: LOADING Redis is loading the dataset")

    monkeypatch.setattr(reader, "fields_many", loading)
    response = api.get(gender_url("C1"))
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json() == {"detail": "Redis is loading; retry shortly"}


def test_each_windowed_model_is_read_from_its_own_refresh_script() -> None:
    """With two windowed models asked for at once, each script recomputes its own model (on a
    replica nothing is written back): the merged answer takes each model's fields from its own
    script's reply, and the other models' from the last reply."""
    from genderd.keys import Keys
    from genderd.models.last import LastModel
    from genderd.models.top7d import Top7dModel
    from genderd.models.window import WindowRuntime
    from genderd.reader import Reader
    from genderd.settings import Settings

    class Top3(Top7dModel):
        name = "top3d"

    settings, keys = Settings(), Keys()
    models = [
        LastModel(settings, keys),
        WindowRuntime(Top7dModel, settings, keys),
        WindowRuntime(Top3, settings, keys),
    ]
    fields = [name for model in models for name in model.answer_fields]
    calls = ["script of top7d", "script of top3d"]

    def reply(values: dict[str, bytes]) -> list[bytes | None]:
        return [values.get(name.decode()) for name in fields]

    last = {"last": b"male", "last:ts": b"1", "last:at": b"2"}
    fresh_top7d = reply(
        {**last, "top7d": b"male", "top7d:at": b"8", "top7d:n:male": b"7", "top3d": b"kids"}
    )
    fresh_top3d = reply(
        {
            **last,
            "top7d": b"female",
            "top7d:n:female": b"5",
            "top3d": b"male",
            "top3d:at": b"9",
            "top3d:n:male": b"9",
        }
    )
    merged = Reader._merged(calls, [fresh_top7d, fresh_top3d], models, fields)  # type: ignore[arg-type]
    # top3d's script ran last but did not recompute top7d: top7d comes from its own script
    assert merged[b"top7d"] == b"male" and merged[b"top7d:n:male"] == b"7"
    assert b"top7d:n:female" not in merged
    assert merged[b"top3d"] == b"male" and merged[b"top3d:n:male"] == b"9"
    assert merged[b"last"] == b"male"
    assert b"last:s" not in merged  # a missing field is left out
