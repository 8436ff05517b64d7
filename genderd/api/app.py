"""The HTTP API (SPEC §5): cache-first lookups, ingest, models, health and metrics.

``create_app(settings)`` builds the app; its state (the Redis links, the deployment, metrics)
lives on ``app.state.api``, never in module globals. Routes are split by concern:
:mod:`~genderd.api.lookups` (the hot routes, called directly), :mod:`~genderd.api.ingest` and
:mod:`~genderd.api.ops` (ordinary FastAPI routes). genderd's error families are mapped here,
once (:func:`_install_handlers`): every "Redis cannot serve this now" error becomes 503 with
``Retry-After`` (the connections come back by themselves), an input error a 4xx.
"""

from __future__ import annotations

import gc
import inspect
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from redis.exceptions import RedisError

from genderd import __version__, discovery
from genderd.api import docs, erase, ingest, lookups, ops
from genderd.api.champion import ChampionKeeper
from genderd.api.inputs import ClientGoneError
from genderd.api.metrics import HttpMetrics
from genderd.api.parent import following_parent
from genderd.api.responses import JSON, ApiError
from genderd.api.schemas import BadEvents, EventBatch, EventIn, LookupRequest
from genderd.api.state import Api
from genderd.clock import wall_clock_ms
from genderd.errors import ConfigurationError, GenderdError, InputError, UnavailableError
from genderd.settings import Settings
from genderd.transport import translate
from genderd.transport.unavailable import RETRY_AFTER_S

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None, clock: Callable[[], int] = wall_clock_ms
) -> FastAPI:
    """The genderd API for ``settings`` (default: from ``GENDERD_*`` environment variables)."""
    # Resolved here, at the edge: the configured URL, else the server of a `genderd up` here.
    settings = discovery.resolved(settings or Settings())
    problem = settings.erasure_problem()
    if problem:
        raise ConfigurationError(problem)
    api = Api(settings, clock)
    keeper = ChampionKeeper(api)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with following_parent():  # a worker process of `serve` stops when serve dies
            await api.start()
            keeper.start()
            # Everything loaded so far (FastAPI, pydantic, the models) lives as long as the
            # process: keep it out of the cyclic GC, whose full collections over it stalled
            # requests for ~50 ms several times a second under load (p99 62 ms -> 14 ms in the
            # API benchmark).
            gc.freeze()
            try:
                yield
            finally:
                await keeper.stop()
                await api.stop()

    app = FastAPI(
        title="genderd",
        version=__version__,
        summary="Which department each shopper prefers, in real time.",
        lifespan=lifespan,
        default_response_class=JSON,
        docs_url=None,  # served from the package below (docs.install): no CDN
        # no 307 from /v1/models/ to /v1/models: its Location echoed the request's Host header
        redirect_slashes=False,
        redoc_url=None,
        **_telemetry_off(),
    )
    app.state.api = api
    app.state.champion = keeper
    _install_handlers(app)
    # on the app's own router, not include_router: see genderd.api.lookups
    lookups.install(app.router, api)
    ingest.install(app.router)
    erase.install(app.router)
    ops.install(app.router)
    docs.install(app)
    _install_openapi(app)
    _match_whole_paths(app)
    # every request counted per route template, method and status (genderd_http_requests)
    app.add_middleware(HttpMetrics, collector=api.metrics.http)
    return app


def _match_whole_paths(app: FastAPI) -> None:
    """Make every route match the whole path. Starlette ends its path patterns with ``$``,
    which also matches before a final newline: ``GET /v1/clients/A5%0A`` answered for ``A5``
    and ``DELETE`` erased it. ``\\Z`` matches at the very end only, so such a path is 404."""
    for route in app.router.routes:
        regex = getattr(route, "path_regex", None)
        if isinstance(regex, re.Pattern) and regex.pattern.endswith("$"):
            route.path_regex = re.compile(regex.pattern[:-1] + r"\Z")  # type: ignore[attr-defined]


def _telemetry_off() -> dict[str, Any]:
    """FastAPI's built-in OpenTelemetry (newer releases) looks up the providers on every
    request; genderd exports Prometheus metrics instead, so it is switched off."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def unavailable(error: UnavailableError) -> Response:
    """The answer while Redis cannot serve a request: 503 with ``Retry-After``."""
    log.warning("Redis cannot serve a request (%s): %s", error.state, error)
    return JSON(
        {"detail": f"Redis is {error.state}; retry shortly"},
        503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def _install_handlers(app: FastAPI) -> None:
    """genderd's error families, each mapped once (the most specific class's handler wins)."""

    async def api_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, ApiError)
        return JSON({"detail": error.detail}, error.status_code, headers=error.headers)

    async def client_gone(request: Request, error: Exception) -> Response:
        # Nobody reads this answer; the disconnect is counted, not logged as an error.
        request.app.state.api.metrics.disconnects.inc()
        return Response(status_code=400)

    async def bad_input(request: Request, error: Exception) -> Response:
        # What a route did not turn into its own ApiError: a 422 in FastAPI's layout.
        return JSON({"detail": [{"loc": [], "msg": str(error), "type": "invalid"}]}, 422)

    async def redis_state(request: Request, error: Exception) -> Response:
        assert isinstance(error, UnavailableError)
        return unavailable(error)

    async def redis_error(request: Request, error: Exception) -> Response:
        # A redis-py error from a typed command (status, stream plumbing): map it the same way.
        translated = translate(error)
        if isinstance(translated, UnavailableError):
            return unavailable(translated)
        log.error("Redis refused a command", exc_info=error)
        return JSON({"detail": "internal error"}, 500)

    async def internal(request: Request, error: Exception) -> Response:
        # A configuration or model error while serving: the server's fault, logged.
        log.error("cannot serve %s: %s", request.url.path, error, exc_info=error)
        return JSON({"detail": "internal error"}, 500)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(ClientGoneError, client_gone)
    app.add_exception_handler(InputError, bad_input)
    app.add_exception_handler(UnavailableError, redis_state)
    app.add_exception_handler(GenderdError, internal)
    app.add_exception_handler(RedisError, redis_error)
    app.add_exception_handler(ConnectionError, redis_error)  # OSError family from sockets
    app.add_exception_handler(TimeoutError, redis_error)


def _install_openapi(app: FastAPI) -> None:
    """Document the bodies the ingest and batch lookup routes read raw (so that every bad
    event can be reported, and any bad body is a 422)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        template = "#/components/schemas/{model}"
        for model in (EventIn, EventBatch, BadEvents, LookupRequest):
            components[model.__name__] = model.model_json_schema(ref_template=template)
        schema["paths"]["/v1/events"]["post"]["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": template.format(model="EventIn")},
                            {"$ref": template.format(model="EventBatch")},
                        ]
                    }
                }
            },
        }
        schema["paths"]["/v1/lookup"]["post"]["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": template.format(model="LookupRequest")}}
            },
        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
