"""Per-app state of the HTTP API: settings, the Redis links, the deployment, request checks."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from urllib.parse import unquote_to_bytes

from fastapi import Request
from redis.exceptions import ResponseError

from genderd import catalog, status
from genderd.api.metrics import ChampionSnapshot, Metrics, multiprocess_dir
from genderd.api.responses import ApiError, invalid
from genderd.clock import Clock, wall_clock_ms
from genderd.deployment import Deployment, open_deployment
from genderd.events import cid_problem
from genderd.grading.champion import Champion
from genderd.models.base import Model, ResultHash
from genderd.models.registry import UnknownModelError
from genderd.reader import Reader
from genderd.settings import Settings
from genderd.status import ModelStatus
from genderd.transport import Links, RedisUnavailableError, connect

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 256


class Api:
    """Per-app state: settings, the Redis links and what depends on the deployment.

    The deployment (the stored shard count) is opened on first use, so that the API starts,
    and answers 503, while Redis is down.
    """

    def __init__(self, settings: Settings, clock: Clock = wall_clock_ms) -> None:
        self.settings = settings
        self.clock = clock
        # The models requests name: as configured until the deployment is opened (so that
        # names are checked, 422, while Redis is down), then the opened deployment's, built
        # for the oldest data layout it holds (see _serve).
        self.configured = Deployment.build(settings, clock)
        for problem in self.configured.registry.broken.values():
            log.warning("%s; the API goes on without that model", problem)
        #: the champion as last read (genderd.api.champion), None before the first read
        self.champion: Champion | None = None
        self._serve(self.configured)
        self.metrics = Metrics(multiprocess_dir())
        self.links: Links | None = None
        self._deployment: Deployment | None = None
        self._reader: Reader | None = None
        self._lock = asyncio.Lock()
        #: the deployment's models as recorded when it was opened (refreshed by /v1/models),
        #: to say why a model it runs is not served here
        self.records: dict[str, catalog.ModelRecord] = {}
        # /metrics: the per-model status read from Redis, reused for metrics_cache_s
        self._status: tuple[float, list[ModelStatus]] | None = None
        self._status_lock = asyncio.Lock()

    async def start(self) -> None:
        timeout = self.settings.api_timeout_ms / 1000
        self.links = connect(
            self.settings,
            timeout_s=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            max_connections=MAX_CONNECTIONS,
        )

    async def stop(self) -> None:
        self.metrics.close()
        if self.links is not None:
            await self.links.close()
            self.links = None

    def connected(self) -> Links:
        if self.links is None:
            raise RedisUnavailableError("the API is not started")
        return self.links

    async def deployment(self) -> Deployment:
        """The deployment, opened on first use (see the class docstring)."""
        if self._deployment is None:
            async with self._lock:
                if self._deployment is None:
                    links = self.connected()
                    deployment = await open_deployment(links.client, self.configured)
                    self.records = await self._records(links, deployment)
                    self._serve(deployment)
                    self._reader = Reader(deployment, links.fast)
                    self._deployment = deployment
        return self._deployment

    @staticmethod
    async def _records(links: Links, deployment: Deployment) -> dict[str, catalog.ModelRecord]:
        """The deployment's model records, for messages only: a stream key of another type
        (WRONGTYPE) leaves them empty rather than failing the request that opens it."""
        try:
            return await catalog.read(links.fast, deployment)
        except ResponseError as error:
            log.warning("cannot read the deployment's models: %s", error)
            return {}

    def _serve(self, deployment: Deployment) -> None:
        """Answer requests with ``deployment``'s models."""
        self.serving = deployment
        self.default_model = deployment.registry.default(self.settings)
        self.models = list(deployment.registry)
        if self.champion is not None:
            self.follow(self.champion)

    def champion_snapshot(self) -> ChampionSnapshot | None:
        """The champion as /metrics shows it (None before the first read)."""
        current = self.champion
        if current is None:
            return None
        return ChampionSnapshot(current.model, current.behind, current.changes)

    def follow(self, current: Champion) -> None:
        """Remember the champion; with ``GENDERD_DEFAULT_MODEL=best``, answer lookups that
        name no model from it (from the start model while it is not served here)."""
        self.champion = current
        if not self.settings.serves_best:
            return
        try:
            self.default_model = self.serving.model(current.model)
        except UnknownModelError:
            log.warning(
                "champion %s is not served by this process: answering from %s",
                current.model,
                self.settings.champion_start,
            )
            self.default_model = self.serving.registry.default(self.settings)

    async def reader(self) -> Reader:
        if self._reader is None:
            await self.deployment()
            assert self._reader is not None
        return self._reader

    # -- request checks ---------------------------------------------------------------------
    def model(self, name: str | None, location: tuple[str, ...] = ("query", "model")) -> Model:
        if name is None:
            return self.default_model
        try:
            return self.serving.model(name)
        except UnknownModelError as error:
            found = None if error.left_out else catalog.find(self.records, name)
            if found is not None or error.left_out is not None or error.broken is not None:
                why = str(error) if found is None else catalog.not_served(self.serving, found)
                raise invalid(list(location), why, "model_not_served") from None
            raise invalid(list(location), str(error), "unknown_model") from None

    @staticmethod
    def check_cid(cid: str, location: list[str], request: Request | None = None) -> None:
        if "\ufffd" in cid and request is not None and not _utf8_path(request):
            raise invalid(location, "cid is not valid UTF-8", "bad_cid")
        problem = cid_problem(cid)
        if problem:
            raise invalid(location, problem, "bad_cid")

    @staticmethod
    def has_token(request: Request, token: str | None) -> bool:
        """Whether ``request`` may pass a guard of ``token`` (any request when it is None)."""
        if token is None:
            return True
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), token.encode()
        )

    @classmethod
    def check_token(cls, request: Request, token: str | None) -> None:
        if not cls.has_token(request, token):
            raise ApiError(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})

    async def model_status(self) -> list[ModelStatus]:
        """Every model's status for /metrics, read from Redis at most once per
        ``metrics_cache_s`` however many scrapers ask (one read at a time)."""
        ttl = self.settings.metrics_cache_s
        async with self._status_lock:
            cached = self._status
            if cached is not None and time.monotonic() - cached[0] < ttl:
                return cached[1]
            fresh = await status.collect(self.connected().client, await self.deployment())
            self._status = (time.monotonic(), fresh)
            return fresh

    async def fields(self, cids: list[str], models: list[Model], endpoint: str) -> list[ResultHash]:
        """The clients' result hashes (the cids are validated already), timed per endpoint."""
        reader = self._reader or await self.reader()
        started = time.perf_counter()
        result = await reader.fields_many(cids, models, validated=True)
        self.metrics.lookup_time(endpoint).observe(time.perf_counter() - started)
        return result


def api_of(request: Request) -> Api:
    """The :class:`Api` of the app serving ``request``."""
    api: Api = request.app.state.api
    return api


def _utf8_path(request: Request) -> bool:
    """Whether the raw request path is valid UTF-8 (Starlette decodes bad bytes to U+FFFD)."""
    try:
        unquote_to_bytes(request.scope.get("raw_path", b"")).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
