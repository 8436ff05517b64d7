"""Routes for operators: models with their progress, health, readiness, Prometheus metrics.

Ordinary FastAPI routes (add new ones here, or in a module of their own), except the liveness
probe: orchestrators call it constantly and it is the benchmarks' no-I/O baseline, so it is
called directly like the lookups.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from genderd import catalog, status
from genderd.api.lookups import READ_TOKEN, UNAVAILABLE
from genderd.api.responses import JSON, RawRoute, invalid
from genderd.api.schemas import ModelsResponse, ValidationProblem
from genderd.api.state import api_of
from genderd.grading.live import DEFAULT_WINDOW_S, parse_window
from genderd.grading.view import champion_of, grading_of, live_view
from genderd.transport import RedisUnavailableError, translate
from genderd.transport.unavailable import RETRY_AFTER_S


def _window(request: Request) -> int:
    """The ``window`` query parameter (``24h``, ``7d``; 1h to 30d) as seconds, or a 422."""
    given = request.query_params.get("window")
    if given is None:
        return DEFAULT_WINDOW_S
    try:
        return parse_window(given)
    except ValueError as error:
        raise invalid(["query", "window"], str(error), "bad_window") from None


async def models(request: Request) -> Response:
    api = api_of(request)
    api.check_token(request, api.settings.read_token)
    window_s = _window(request)
    deployment = await api.deployment()
    links = api.connected()
    rows = await status.collect(links.client, deployment)
    api.records = await catalog.read(links.fast, deployment)
    view = await live_view(links, deployment, window_s, api.clock())
    grading = {g.model: grading_of(g, window_s) for g in view.grades.models}
    return JSON(
        {
            "champion": champion_of(view),
            "models": [
                {
                    "name": r.name,
                    "aliases": list(r.aliases),
                    "description": r.description,
                    "default": r.name == api.default_model.name,
                    "served": r.not_served is None,
                    "not_served": r.not_served,
                    "kind": r.kind,
                    "off": r.off,
                    "unreadable_record": r.unreadable or None,
                    "lag": r.lag,
                    "pending": r.pending,
                    "dead": r.dead,
                    "applied": r.applied,
                    "stalled": r.stalled,
                    "grading": grading.get(r.name),
                }
                for r in rows
            ],
        }
    )


WINDOW = {
    "name": "window",
    "in": "query",
    "required": False,
    "description": "how far back the live grades go: hours or days, 1h to 30d",
    "schema": {"type": "string", "default": "24h"},
    "example": "7d",
}


async def healthz(request: Request) -> Response:
    return JSON({"status": "ok"})


async def readyz(request: Request) -> Response:
    """200 when Redis answers and has the scripts; else 503 saying what it sees: the server's
    state, and to a caller that may read (the read token, when one is set) the error itself
    (a master down, a cluster failing over, a replica asked to write), which can name the
    Redis server's address."""
    api = api_of(request)
    try:
        reader = await api.reader()
        await api.connected().fast.ping()
        await reader.load_scripts()
    except Exception as raised:
        error = translate(raised)
        if not isinstance(error, RedisUnavailableError):
            raise
        reason = (
            str(error)
            if api.has_token(request, api.settings.read_token)
            else f"Redis is {error.state} (the error itself with the read token)"
        )
        return JSON(
            {
                "status": "unavailable",
                "detail": f"Redis is {error.state}; retry shortly",
                "reason": reason,
            },
            503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    return JSON({"status": "ready", "transport": api.connected().fast.kind})


async def metrics(request: Request) -> Response:
    api = api_of(request)
    try:
        snapshot = await api.model_status()
    except Exception as raised:  # the counters that live in Redis are left out while it is down
        if not isinstance(translate(raised), RedisUnavailableError):
            raise
        snapshot = []
    return Response(
        api.metrics.render(snapshot, api.champion_snapshot()),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )


def install(router: APIRouter) -> None:
    """Add the operator routes to ``router`` (the app's own; see :mod:`genderd.api.lookups`)."""
    router.add_api_route(
        "/v1/models",
        models,
        methods=["GET"],
        response_model=ModelsResponse,
        responses={
            401: READ_TOKEN,
            422: {"model": ValidationProblem, "description": "a bad window"},
            503: UNAVAILABLE,
        },
        summary="Models with lag, pending, dead letters and live grades; the champion",
        openapi_extra={"parameters": [WINDOW]},
    )
    router.add_api_route(
        "/healthz",
        healthz,
        methods=["GET"],
        route_class_override=RawRoute,
        summary="Liveness: the process answers (no I/O)",
    )
    router.add_api_route(
        "/readyz",
        readyz,
        methods=["GET"],
        responses={503: UNAVAILABLE},
        summary="Readiness: Redis answers on the connection lookups use, scripts loaded",
    )
    router.add_api_route(
        "/metrics",
        metrics,
        methods=["GET"],
        response_class=Response,
        summary="Prometheus metrics",
    )
