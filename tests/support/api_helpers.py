"""Helpers of the HTTP API tests: a synchronous httpx client on an ASGI app with its lifespan.

No starlette TestClient (it warns, and pytest turns warnings into errors): the app's lifespan is
entered with ``app.router.lifespan_context`` and requests go through ``httpx.ASGITransport``,
all on one event loop that the test drives with ``run_until_complete``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import redis
from fastapi import FastAPI

from genderd.clock import Clock
from genderd.deployment import Deployment
from genderd.keys import Keys
from genderd.settings import Settings

from .factories import make_worker

T = TypeVar("T")

# Bound of one request: only there to turn a hang into a failure, not a speed claim.
HANG_S = 10.0


class ApiClient:
    """An app with its lifespan entered and an httpx client on it, driven synchronously."""

    def __init__(self, app: FastAPI, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop
        self._stack = contextlib.AsyncExitStack()
        self.http: httpx.AsyncClient | None = None
        self.run(self._enter())

    async def _enter(self) -> None:
        await self._stack.enter_async_context(self.app.router.lifespan_context(self.app))
        self.http = await self._stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://test")
        )

    def run(self, awaitable: Awaitable[T]) -> T:
        return self.loop.run_until_complete(awaitable)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        assert self.http is not None
        return self.run(asyncio.wait_for(self.http.request(method, url, **kwargs), HANG_S))

    def timed(self, method: str, url: str, **kwargs: Any) -> tuple[httpx.Response, float]:
        """The response and how long it took (used only to catch hangs)."""
        started = time.monotonic()
        response = self.request(method, url, **kwargs)
        return response, time.monotonic() - started

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        self.run(self._stack.aclose())


def cid_path(cid: str) -> str:
    """A client id as one URL path segment (every reserved character percent-encoded)."""
    return quote(cid, safe="")


def gender_url(cid: str, model: str | None = None) -> str:
    url = f"/v1/clients/{cid_path(cid)}/gender"
    return url if model is None else f"{url}?model={quote(model, safe='')}"


def drain(
    loop: asyncio.AbstractEventLoop,
    client: Any,
    settings: Settings,
    clock: Clock,
    models: Iterable[str] | None = None,
) -> None:
    """Process everything in the streams with an in-process worker of each (named) model."""
    registry = Deployment.build(settings).registry
    chosen = list(registry) if models is None else [registry.get(name) for name in models]
    for model in chosen:
        worker = make_worker(client, model, settings, clock=clock)
        loop.run_until_complete(worker.ensure_groups())
        loop.run_until_complete(worker.drain())


def stream_lengths(sync_redis: redis.Redis, settings: Settings) -> list[int]:
    """XLEN of every shard's event stream."""
    keys = Keys(settings.prefix)
    return [int(sync_redis.xlen(keys.stream(shard))) for shard in range(settings.shards)]


class RoundTripProxy:
    """A loopback TCP proxy in front of a Redis server that counts round trips.

    A round trip starts whenever a client sends data after it last received some (or for the
    first time) on a connection: a pipeline written at once is one round trip, a command sent
    after waiting for a reply is another, whatever client library or connection sent them.
    Runs on the event loop of the app that talks through it.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.round_trips = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            writer.close()
            return
        self._writers.append(upstream_writer)
        last = ["reply"]

        async def pump(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, direction: str
        ) -> None:
            try:
                while data := await source.read(1 << 20):
                    if direction == "request" and last[0] != "request":
                        self.round_trips += 1
                    last[0] = direction
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()

        await asyncio.gather(
            pump(reader, upstream_writer, "request"), pump(upstream_reader, writer, "reply")
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
        if self._server is not None:
            await self._server.wait_closed()


HOUR = 3_600_000
MODEL_NAMES = ["last", "recency", "top", "top7d"]
KNOWN = "last (alias model1), recency, top (alias model2), top7d (alias model3)"

MakeApi = Callable[..., ApiClient]


def produce(api: ApiClient, events: list[dict[str, Any]]) -> None:
    response = api.post("/v1/events", json={"events": events})
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": len(events)}


def process(aio: Any, clock: Clock, models: list[str] | None = None) -> None:
    drain(aio.loop, aio.client, aio.settings, clock, models)


def stream_key(settings: Settings, cid: str) -> str:
    shard = zlib.crc32(cid.encode("utf-8")) % settings.shards
    return f"genderd:{{s{shard}}}:events"
