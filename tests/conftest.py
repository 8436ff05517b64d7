"""Shared fixtures: a real Redis-compatible server started from the bundled binary.

The session starts one server (the same binary `genderd up` uses) on a free port and stops it
by pid at the end; every test gets it flushed. Nothing depends on a server the machine runs.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from genderd.api import create_app
from genderd.clock import MS_PER_DAY
from genderd.deployment import Deployment
from genderd.server import Server, find_binary, free_port
from genderd.settings import Settings
from genderd.transport import async_client

from .api_helpers import ApiClient, MakeApi

T = TypeVar("T")


class FakeClock:
    """A processing/read clock that tests move by hand (milliseconds)."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms

    @property
    def day(self) -> int:
        return self.now_ms // MS_PER_DAY


def tomorrow_noon_ms() -> int:
    """Noon of tomorrow (UTC): a clock ahead of real time, so that fixed EXPIREATs of day
    buckets (which Redis applies in real time) never fire during a test, with a whole day of
    room on both sides of "now" for window edges."""
    return (time.time_ns() // 1_000_000 // MS_PER_DAY + 1) * MS_PER_DAY + MS_PER_DAY // 2


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("server")
    server = Server(
        find_binary(os.environ.get("GENDERD_REDIS_SERVER")), free_port(), data, persistent=False
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: Server) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        shards=4,
        genders="female,male,kids",
        batch_size=7,
        claim_idle_ms=100,
        block_ms=50,
    )


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(tomorrow_noon_ms())


class Loop:
    """Runs coroutines for synchronous tests (hypothesis included) on one event loop, with one
    async client bound to it (a real one, or fakeredis for the fast tier)."""

    def __init__(self, settings: Settings, fake: bool = False) -> None:
        self.loop = asyncio.new_event_loop()
        self.settings = settings
        self.client: Any = self.run(self._connect(fake))
        self.registry = Deployment.build(settings).registry

    async def _connect(self, fake: bool) -> Any:
        if fake:
            import fakeredis

            return fakeredis.FakeAsyncRedis()
        return async_client(self.settings)

    def run(self, awaitable: Awaitable[T]) -> T:
        return self.loop.run_until_complete(awaitable)

    def close(self) -> None:
        self.run(self.client.aclose())
        self.loop.close()


@pytest.fixture
def aio(settings: Settings) -> Iterator[Loop]:
    loop = Loop(settings)
    yield loop
    loop.close()


@pytest.fixture
def fake_loop() -> Iterator[Loop]:
    settings = Settings(
        redis_url="redis://fakeredis.invalid", shards=4, genders="female,male,kids", batch_size=7
    )
    loop = Loop(settings, fake=True)
    yield loop
    loop.close()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def make_api(aio: Loop, settings: Settings, clock: FakeClock) -> Iterator[MakeApi]:
    """Apps on the test's loop: ``make_api(read_clock=..., **settings_overrides)``."""
    made: list[ApiClient] = []

    def make(read_clock: FakeClock | None = None, **overrides: Any) -> ApiClient:
        chosen = settings.model_copy(update=overrides) if overrides else settings
        client = ApiClient(create_app(chosen, clock=read_clock or clock), aio.loop)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def api(make_api: MakeApi) -> ApiClient:
    return make_api()
