"""The HTTP API (SPEC §5): cache-first lookups, ingest, models, health and metrics.

``create_app(settings)`` builds the app; its state (one Redis pool, a pipelined lookup
connection, the reader, metrics) lives on ``app.state.api``, never in module globals. Lookups
return JSON encoded with orjson straight from the client's result hash, read in one Redis round
trip; the pydantic models of :mod:`genderd.schemas` document those answers without being built
per request. While Redis is unreachable every call that needs it answers 503 with
``Retry-After``, and the connections come back by themselves.
"""

from __future__ import annotations

import gc
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response

from genderd import __version__
from genderd.api.responses import JSON, ApiError, RawRoute
from genderd.api.routes import install_routes
from genderd.api.state import UNAVAILABLE, Api
from genderd.processor import wall_clock_ms
from genderd.schemas import EventBatch, EventErrors, EventIn, LookupRequest
from genderd.settings import Settings

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1


def create_app(
    settings: Settings | None = None, clock: Callable[[], int] = wall_clock_ms
) -> FastAPI:
    """The genderd API for ``settings`` (default: from ``GENDERD_*`` environment variables)."""
    settings = settings or Settings()
    api = Api(settings, clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await api.start()
        # Everything loaded so far (FastAPI, pydantic, the models) lives as long as the process:
        # keep it out of the cyclic GC, whose full collections over it stalled requests for
        # ~50 ms several times a second under load (p99 62 ms -> 14 ms in bench/api.py).
        gc.freeze()
        try:
            yield
        finally:
            await api.stop()

    app = FastAPI(
        title="genderd",
        version=__version__,
        summary="Which department each shopper prefers, in real time.",
        lifespan=lifespan,
        default_response_class=JSON,
        **_telemetry_off(),
    )
    app.router.route_class = RawRoute
    app.state.api = api
    _install_handlers(app)
    install_routes(app, api)
    _install_openapi(app)
    return app


def _telemetry_off() -> dict[str, Any]:
    """FastAPI's built-in OpenTelemetry (newer releases) looks up the providers on every
    request; genderd exports Prometheus metrics instead, so it is switched off."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def _install_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, ApiError)
        return JSON({"detail": error.detail}, error.status_code, headers=error.headers)

    async def unavailable(request: Request, error: Exception) -> Response:
        log.warning("Redis unavailable: %s", error)
        return JSON(
            {"detail": "Redis is unavailable; retry shortly"},
            503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    app.add_exception_handler(ApiError, api_error)
    for kind in UNAVAILABLE:
        app.add_exception_handler(kind, unavailable)


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
        for model in (EventIn, EventBatch, EventErrors, LookupRequest):
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
