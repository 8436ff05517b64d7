"""Shared fixtures: a real Redis-compatible server started from the bundled binary.

The session starts one server (the same binary `genderd up` uses) on a free port and stops it
by pid at the end; every test gets it flushed. Nothing depends on a server the machine runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from genderd.api import create_app
from genderd.bundled import BundledServer, find_binary, free_port
from genderd.settings import Settings

from .support.api_helpers import ApiClient, MakeApi
from .support.runtime import FakeClock, Loop, tomorrow_noon_ms

T = TypeVar("T")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BundledServer]:
    data = tmp_path_factory.mktemp("server")
    server = BundledServer(
        find_binary(os.environ.get("GENDERD_REDIS_SERVER")), free_port(), data, persistent=False
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: BundledServer) -> Iterator[str]:
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
