"""The HTTP API while Redis is unreachable (SPEC §5): 503 with Retry-After, never a 500, never a
hung request, and recovery by itself once the server is back, without restarting the app.

Each test starts its own server from the bundled binary (persistent: AOF in its data dir), so
that it can stop, pause and restart it; the server is stopped by pid at the end.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from genderd import transport
from genderd.api import create_app
from genderd.bundled import BundledServer, find_binary, free_port
from genderd.settings import Settings

from .support.api_helpers import ApiClient, drain, gender_url
from .support.runtime import FakeClock, tomorrow_noon_ms

pytestmark = pytest.mark.fault

HOUR = 3_600_000
# Generous: only there to catch a hung request (the API's Redis timeout is 1 s).
BOUND_S = 5.0
UNAVAILABLE = {"detail": "Redis is unavailable; retry shortly"}


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[BundledServer]:
    """A server of this test's own, not started yet."""
    binary = find_binary(os.environ.get("GENDERD_REDIS_SERVER"))
    server = BundledServer(binary, free_port(), tmp_path / "data", persistent=True)
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            os.kill(server.pid, signal.SIGCONT)  # in case a test left it paused
        server.stop()


def settings_for(server: BundledServer) -> Settings:
    return Settings(redis_url=server.url, shards=4, genders="female,male,kids", block_ms=50)


def calls(cid: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every call that needs Redis."""
    return [
        ("GET", gender_url(cid), {}),
        ("GET", gender_url(cid, "top7d"), {}),
        ("GET", f"/v1/clients/{cid}", {}),
        ("POST", "/v1/lookup", {"json": {"cids": [cid, "other"]}}),
        ("POST", "/v1/lookup", {"json": {"cids": [cid, "other"], "model": "top7d"}}),
        ("POST", "/v1/events", {"json": {"cid": cid, "gender": "male"}}),
        ("GET", "/v1/models", {}),
        ("GET", "/readyz", {}),
    ]


def assert_unavailable(api: ApiClient, cid: str) -> None:
    for method, url, kwargs in calls(cid):
        response, elapsed = api.timed(method, url, **kwargs)
        assert response.status_code == 503, (method, url, response.text)
        body = response.json()
        if url == "/readyz":  # it also says what it sees
            assert body.pop("status") == "unavailable" and body.pop("reason")
        assert body == UNAVAILABLE
        assert int(response.headers["retry-after"]) >= 1
        assert elapsed < BOUND_S, (method, url, elapsed)
    # Liveness and metrics need no Redis.
    assert api.get("/healthz").status_code == 200
    assert api.get("/metrics").status_code == 200


def assert_answers(api: ApiClient, cid: str, known: bool) -> None:
    """Every call answers normally (404 for the lookups of a client nobody knows)."""
    for method, url, kwargs in calls(cid):
        response = api.request(method, url, **kwargs)
        lookup = url.startswith("/v1/clients/")
        wanted = {200, 202} if known or not lookup else {404}
        assert response.status_code in wanted, (method, url, response.text)


def assert_concurrent_unavailable(api: ApiClient, cid: str, count: int = 20) -> None:
    assert api.http is not None

    async def many() -> list[httpx.Response]:
        return await asyncio.wait_for(
            asyncio.gather(*(api.http.get(gender_url(f"{cid}-{i}")) for i in range(count))),  # type: ignore[union-attr]
            BOUND_S,
        )

    assert {r.status_code for r in api.run(many())} == {503}


def test_outage_answers_503_then_recovers_without_restarting_the_app(
    server: BundledServer, loop: asyncio.AbstractEventLoop
) -> None:
    server.start()
    settings = settings_for(server)
    clock = FakeClock(tomorrow_noon_ms())
    api = ApiClient(create_app(settings, clock=clock), loop)
    workers = transport.async_client(settings)
    try:
        ts = clock.now_ms - HOUR
        response = api.post("/v1/events", json={"cid": "C1", "gender": "female", "ts": ts})
        assert response.status_code == 202
        drain(loop, workers, settings, clock)
        expected = api.get(gender_url("C1"))
        assert expected.status_code == 200
        assert expected.json()["gender"] == "female"
        assert api.get(gender_url("nobody")).status_code == 404
        assert_answers(api, "C1", known=True)

        server.stop()
        assert_unavailable(api, "C1")
        assert_unavailable(api, "C1")  # again, with every connection known to be broken
        assert_concurrent_unavailable(api, "C1")

        server.start()  # same port, same data dir: the AOF brings the data back
        answer = api.get(gender_url("C1"))
        assert (answer.status_code, answer.json()) == (200, expected.json())
        assert api.get(gender_url("nobody")).status_code == 404
        assert_answers(api, "C1", known=True)
    finally:
        api.close()
        loop.run_until_complete(workers.aclose())


def test_an_unresponsive_server_gives_503_not_a_hung_request(
    server: BundledServer, loop: asyncio.AbstractEventLoop
) -> None:
    """A server that accepts connections and never answers (paused with SIGSTOP); once it
    resumes, the late replies to the abandoned requests must not be taken for new ones."""
    server.start()
    settings = settings_for(server)
    clock = FakeClock(tomorrow_noon_ms())
    api = ApiClient(create_app(settings, clock=clock), loop)
    workers = transport.async_client(settings)
    try:
        for cid, gender in [("C1", "female"), ("C2", "male"), ("C3", "kids")]:
            event = {"cid": cid, "gender": gender, "ts": clock.now_ms - HOUR}
            assert api.post("/v1/events", json=event).status_code == 202
        drain(loop, workers, settings, clock)
        reads: list[tuple[str, str, dict[str, Any]]] = [
            ("GET", gender_url("C1"), {}),
            ("GET", gender_url("C2", "top7d"), {}),
            ("GET", "/v1/clients/C3", {}),
            ("GET", gender_url("nobody"), {}),
            ("POST", "/v1/lookup", {"json": {"cids": ["C3", "nobody", "C1"]}}),
            ("POST", "/v1/lookup", {"json": {"cids": ["C2", "C1"], "model": "top7d"}}),
        ]
        before = [api.request(method, url, **kw) for method, url, kw in reads]
        assert [r.status_code for r in before] == [200, 200, 200, 404, 200, 200]

        os.kill(server.pid, signal.SIGSTOP)
        try:
            for method, url, kwargs in calls("C1"):
                if url == "/v1/events":
                    continue  # see test_ingest_during_a_stall_writes_each_event_at_most_once
                response, elapsed = api.timed(method, url, **kwargs)
                assert response.status_code == 503, (method, url, response.text)
                assert int(response.headers["retry-after"]) >= 1
                assert elapsed < BOUND_S, (method, url, elapsed)
            assert_concurrent_unavailable(api, "C1")
        finally:
            os.kill(server.pid, signal.SIGCONT)

        after = [api.request(method, url, **kw) for method, url, kw in reads]
        assert [(r.status_code, r.json()) for r in after] == [
            (r.status_code, r.json()) for r in before
        ]
        assert_answers(api, "C1", known=True)
    finally:
        api.close()
        loop.run_until_complete(workers.aclose())


def test_ingest_during_a_stall_writes_each_event_at_most_once(
    server: BundledServer, loop: asyncio.AbstractEventLoop
) -> None:
    """An ingest that times out answers 503; the client will send it again, so the API must not
    have queued the same entries more than once on its own (a retried pipeline)."""
    server.start()
    settings = settings_for(server)
    api = ApiClient(create_app(settings), loop)
    try:
        assert api.post("/v1/events", json={"cid": "C0", "gender": "male"}).status_code == 202
        os.kill(server.pid, signal.SIGSTOP)
        try:
            response, elapsed = api.timed(
                "POST", "/v1/events", json={"cid": "C1", "gender": "female"}
            )
            assert response.status_code == 503, response.text
            assert int(response.headers["retry-after"]) >= 1
            assert elapsed < BOUND_S
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert api.get("/readyz").status_code == 200  # the server has run what it received
        sync = transport.sync_client(settings)
        try:
            copies = sum(
                1
                for shard in range(settings.shards)
                for _, fields in sync.xrange(f"genderd:{{s{shard}}}:events")
                if fields[b"cid"] == b"C1"
            )
        finally:
            sync.close()
        assert copies <= 1, f"one ingest answered 503 and wrote {copies} copies of its event"
    finally:
        api.close()


def test_an_app_started_while_redis_is_down_answers_503_then_recovers(
    server: BundledServer, loop: asyncio.AbstractEventLoop
) -> None:
    api = ApiClient(create_app(settings_for(server)), loop)  # the lifespan starts anyway
    try:
        assert api.get("/healthz").status_code == 200
        assert_unavailable(api, "C1")
        server.start()
        assert api.get("/readyz").json() == {"status": "ready", "transport": "pipelined"}
        assert api.get(gender_url("C1")).status_code == 404
        response = api.post("/v1/events", json={"cid": "C1", "gender": "kids"})
        assert (response.status_code, response.json()) == (202, {"accepted": 1})
        assert_answers(api, "C1", known=False)
    finally:
        api.close()
