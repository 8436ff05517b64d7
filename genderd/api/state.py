"""Per-app state of the HTTP API: settings, models, the Redis connections, request checks."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from urllib.parse import unquote_to_bytes

from fastapi import Request
from redis import exceptions as redis_errors

from genderd import connection
from genderd.api.responses import ApiError, invalid
from genderd.events import cid_problem
from genderd.lookup import Reader
from genderd.metrics import Metrics
from genderd.models.base import Model
from genderd.models.registry import Registry, UnknownModelError
from genderd.multiplex import MultiplexedConnection
from genderd.processor import wall_clock_ms
from genderd.settings import Settings
from genderd.streams import AsyncClient

MAX_CONNECTIONS = 256
UNAVAILABLE = (
    redis_errors.ConnectionError,  # includes BusyLoadingError and "too many connections"
    redis_errors.TimeoutError,
    redis_errors.ClusterError,
    redis_errors.ReadOnlyError,
    redis_errors.TryAgainError,
    redis_errors.MasterDownError,
    connection.NoServerError,
)


class Api:
    """Per-app state: settings, models, the Redis pool and what depends on the deployment."""

    def __init__(self, settings: Settings, clock: Callable[[], int] = wall_clock_ms) -> None:
        self.settings = settings
        self.clock = clock
        self.registry = Registry.load(settings)
        self.default_model = self.registry.get(settings.default_model)
        self.metrics = Metrics()
        self.client: AsyncClient | None = None
        self.multiplexed: MultiplexedConnection | None = None
        self._reader: Reader | None = None
        self._deployed: Settings | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        timeout = self.settings.api_timeout_ms / 1000
        url = connection.resolve_url(self.settings)
        self.client = connection.async_client(
            self.settings,
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            max_connections=MAX_CONNECTIONS,
        )
        if not self.settings.cluster:  # lookups share one pipelined connection (not on Cluster)
            self.multiplexed = MultiplexedConnection(url, timeout)

    async def stop(self) -> None:
        if self.multiplexed is not None:
            await self.multiplexed.close()
            self.multiplexed = None
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def deployment(self) -> tuple[Settings, Reader]:
        """The settings fixed to the deployment's shard count, and the reader; resolved on
        first use so that the API starts (and answers 503) while Redis is down."""
        if self._reader is None or self._deployed is None:
            async with self._lock:
                if self._reader is None or self._deployed is None:
                    if self.client is None:
                        raise connection.NoServerError("the API is not started")
                    shards = await connection.ainit_deployment(self.client, self.settings)
                    deployed = self.settings.model_copy(update={"shards": shards})
                    self._reader = Reader(
                        self.client, self.registry, deployed, self.clock, self.multiplexed
                    )
                    self._deployed = deployed
        return self._deployed, self._reader

    # -- request checks ---------------------------------------------------------------------
    def model(self, name: str | None, location: tuple[str, ...] = ("query", "model")) -> Model:
        if name is None:
            return self.default_model
        try:
            return self.registry.get(name)
        except UnknownModelError as error:
            raise invalid(list(location), str(error), "unknown_model") from None

    @staticmethod
    def check_cid(cid: str, location: list[str], request: Request | None = None) -> None:
        if "\ufffd" in cid and request is not None and not _utf8_path(request):
            raise invalid(location, "cid is not valid UTF-8", "bad_cid")
        problem = cid_problem(cid)
        if problem:
            raise invalid(location, problem, "bad_cid")

    @staticmethod
    def check_token(request: Request, token: str | None) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), token.encode()
        ):
            raise ApiError(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})

    async def fields(
        self, cids: list[str], models: list[Model], endpoint: str
    ) -> list[dict[str, str]]:
        """The clients' result hashes (the cids are validated already), timed per endpoint."""
        reader = self._reader
        if reader is None:
            _, reader = await self.deployment()
        started = time.perf_counter()
        result = await reader.fields_many(cids, models, validated=True)
        self.metrics.lookup_time(endpoint).observe(time.perf_counter() - started)
        return result


def _utf8_path(request: Request) -> bool:
    """Whether the raw request path is valid UTF-8 (Starlette decodes bad bytes to U+FFFD)."""
    try:
        unquote_to_bytes(request.scope.get("raw_path", b"")).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
