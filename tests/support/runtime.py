"""The clock and the event loop the tests drive by hand."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from genderd.clock import MS_PER_DAY
from genderd.deployment import Deployment
from genderd.settings import Settings
from genderd.transport import async_client

T = TypeVar("T")

#: the per-test timeout of the property tests: they run a fixed number of examples, so their
#: time grows with the CPU they get (a busy machine: several times their usual 10-20 s); the
#: default timeout (120 s, pyproject.toml) is there to catch a hang, not a busy machine
PROPERTY_TIMEOUT_S = 600


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
