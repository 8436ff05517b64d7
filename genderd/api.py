"""The HTTP API (SPEC §5): cache-first lookups, ingest, models, health and metrics.

``create_app(settings)`` builds the app; its state (one Redis pool, the reader, metrics) lives
on ``app.state.api``, never in module globals. Lookups return JSON encoded with orjson straight
from the client's result hash, read in one Redis round trip; the pydantic models of
:mod:`genderd.schemas` document those answers without being built per request. While Redis is
unreachable every call that needs it answers 503 with ``Retry-After``, and the pool
reconnects by itself.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, cast
from urllib.parse import unquote_to_bytes

import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError as PydanticValidationError
from redis import exceptions as redis_errors

from genderd import __version__, connection, status
from genderd.events import Reason, ValidationError, check_event, cid_problem
from genderd.keys import Keys, shard_of
from genderd.lookup import Reader
from genderd.metrics import Metrics
from genderd.models.base import Model
from genderd.models.registry import Registry, UnknownModelError
from genderd.multiplex import MultiplexedConnection
from genderd.processor import wall_clock_ms
from genderd.schemas import (
    MAX_INGEST_EVENTS,
    Accepted,
    ClientAnswers,
    EventBatch,
    EventErrors,
    EventIn,
    GenderAnswer,
    LookupRequest,
    LookupResponse,
    ModelsResponse,
    Problem,
    ValidationProblem,
)
from genderd.settings import Settings
from genderd.streams import AsyncClient

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1
MAX_BODY_BYTES = 4 * 1024 * 1024  # 10,000 events of ~200 bytes fit with room to spare
MAX_LOOKUP_BODY_BYTES = 1024 * 1024  # 1,000 cids of 128 characters, JSON-escaped
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


class JSON(JSONResponse):
    """A JSON response encoded with orjson (no pydantic, no validation on the way out).

    A JSONResponse subclass so that FastAPI documents the routes' response models."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class RawRoute(APIRoute):
    """A route whose endpoint takes the request and returns a Response: called directly.

    FastAPI's dependency solving costs about as much as a lookup's Redis round trip; every
    genderd endpoint parses what it needs itself, and the route still documents itself in
    OpenAPI (response models, parameters given in ``openapi_extra``).
    """

    def get_route_handler(self) -> Endpoint:
        return cast(Endpoint, self.endpoint)


class ApiError(Exception):
    """An error answer: status, body and headers."""

    def __init__(self, status_code: int, detail: Any, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers


def _invalid(location: list[str], message: str, kind: str) -> ApiError:
    """A 422 in FastAPI's error layout."""
    return ApiError(422, [{"loc": location, "msg": message, "type": kind}])


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
            raise _invalid(list(location), str(error), "unknown_model") from None

    @staticmethod
    def check_cid(cid: str, location: list[str], request: Request | None = None) -> None:
        if "\ufffd" in cid and request is not None and not _utf8_path(request):
            raise _invalid(location, "cid is not valid UTF-8", "bad_cid")
        problem = cid_problem(cid)
        if problem:
            raise _invalid(location, problem, "bad_cid")

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


async def _body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refused (413) beyond ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body may be at most {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body may be at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


NO_ANSWER = {"gender": None, "scores": None, "last_event_ts": None, "as_of": None}


def _lookup_request(body: bytes) -> LookupRequest:
    """The batch lookup body; read raw so that any bad body is a 422 in FastAPI's layout."""
    try:
        return LookupRequest.model_validate_json(body)
    except PydanticValidationError as error:
        raise ApiError(
            422,
            [
                {"loc": ["body", *map(str, e["loc"])], "msg": e["msg"], "type": e["type"]}
                for e in error.errors(include_url=False, include_input=False)
            ],
        ) from None


def _event_items(body: bytes) -> list[Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ApiError(422, [{"index": 0, "reason": "bad_json", "detail": str(error)}]) from None
    if isinstance(data, dict) and "events" in data:
        items = data["events"]
        if not isinstance(items, list) or not items:
            raise ApiError(
                422,
                [
                    {
                        "index": 0,
                        "reason": "bad_request",
                        "detail": "events must be a non-empty list of events",
                    }
                ],
            )
        if len(items) > MAX_INGEST_EVENTS:
            raise ApiError(
                422,
                [
                    {
                        "index": MAX_INGEST_EVENTS,
                        "reason": "too_many_events",
                        "detail": f"at most {MAX_INGEST_EVENTS} events per request",
                    }
                ],
            )
        return items
    return [data]


def _check_item(item: dict[str, Any], settings: Settings, now: int) -> tuple[str, str, int | None]:
    """check_event, after the type checks JSON needs (a stream entry is always strings)."""
    if not isinstance(item.get("cid", ""), str):
        raise ValidationError(Reason.BAD_CID, "cid must be a string")
    if not isinstance(item.get("gender", ""), str):
        raise ValidationError(Reason.UNKNOWN_GENDER, "gender must be a string")
    ts = item.get("ts")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, (int, str))):
        raise ValidationError(Reason.BAD_TS, "ts must be an integer of milliseconds")
    return check_event(item, settings.genders, now, settings.max_future_ms)


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
    _install_routes(app, api)
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


CID = {
    "name": "cid",
    "in": "path",
    "required": True,
    "description": "client id: 1-128 characters, no whitespace or control characters",
    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
    "example": "C42",
}
MODEL = {
    "name": "model",
    "in": "query",
    "required": False,
    "description": "model name or alias (last/model1, top/model2, top7d/model3); "
    "default: GENDERD_DEFAULT_MODEL",
    "schema": {"type": "string"},
    "example": "top7d",
}
ERRORS: dict[int | str, dict[str, Any]] = {
    503: {"model": Problem, "description": "Redis is unavailable (see Retry-After)"},
}


def _install_routes(app: FastAPI, api: Api) -> None:  # noqa: C901 - one closure per route
    # The two hottest routes take the raw request: FastAPI's parameter solving costs more
    # than the Redis round trip; their parameters are documented by hand (CID, MODEL).
    @app.get(
        "/v1/clients/{cid:path}/gender",
        response_model=GenderAnswer,
        responses={
            404: {"model": Problem, "description": "the model has no answer"},
            422: {"model": ValidationProblem, "description": "a bad cid or unknown model"},
            **ERRORS,
        },
        summary="One model's answer for a client",
        openapi_extra={"parameters": [CID, MODEL]},
    )
    async def client_gender(request: Request) -> Response:
        """The answer of `model` (name or alias; default: the configured default model)."""
        api.check_token(request, api.settings.read_token)
        cid = request.path_params["cid"]
        chosen = api.model(request.query_params.get("model"))
        api.check_cid(cid, ["path", "cid"], request)
        [fields] = await api.fields([cid], [chosen], "client_gender")
        answer = chosen.answer_json(fields)
        if answer is None:
            raise ApiError(404, f"model {chosen.name} has no answer for this client")
        return JSON({"cid": cid, "model": chosen.name, **answer})

    @app.get(
        "/v1/clients/{cid:path}",
        response_model=ClientAnswers,
        responses={
            404: {"model": Problem, "description": "no model knows the client"},
            422: {"model": ValidationProblem, "description": "a bad cid"},
            **ERRORS,
        },
        summary="Every model's answer for a client",
        openapi_extra={"parameters": [CID]},
    )
    async def client(request: Request) -> Response:
        api.check_token(request, api.settings.read_token)
        cid = request.path_params["cid"]
        api.check_cid(cid, ["path", "cid"], request)
        models = list(api.registry)
        [fields] = await api.fields([cid], models, "client")
        answers = {m.name: m.answer_json(fields) for m in models}
        if all(a is None for a in answers.values()):
            raise ApiError(404, "no model has an answer for this client")
        return JSON({"cid": cid, "models": answers})

    @app.post(
        "/v1/lookup",
        response_model=LookupResponse,
        responses={
            401: {"model": Problem, "description": "a read token is configured and missing"},
            413: {"model": Problem, "description": "the body is too large"},
            422: {"model": ValidationProblem, "description": "a bad body, cid or model"},
            **ERRORS,
        },
        summary="Many clients' answers in one round trip",
    )
    async def lookup(request: Request) -> Response:
        """Up to 1,000 clients, in order; `gender` is null for clients without an answer."""
        api.check_token(request, api.settings.read_token)
        body = _lookup_request(await _body(request, MAX_LOOKUP_BODY_BYTES))
        chosen = api.model(body.model, ("body", "model"))
        for i, cid in enumerate(body.cids):
            api.check_cid(cid, ["body", "cids", str(i)])
        hashes = await api.fields(body.cids, [chosen], "lookup")
        results = []
        for cid, fields in zip(body.cids, hashes, strict=True):
            results.append({"cid": cid, **(chosen.answer_json(fields) or NO_ANSWER)})
        return JSON({"model": chosen.name, "results": results})

    @app.post(
        "/v1/events",
        status_code=202,
        response_model=Accepted,
        responses={
            401: {"model": Problem, "description": "a bearer token is configured and missing"},
            413: {"model": Problem, "description": "the body is too large"},
            422: {"model": EventErrors, "description": "every bad event; nothing was written"},
            **ERRORS,
        },
        summary="Ingest one event or up to 10,000",
    )
    async def ingest(request: Request) -> Response:
        """Validates every event exactly as the workers do; writes all of them or none."""
        api.check_token(request, api.settings.api_token)
        items = _event_items(await _body(request))
        deployed, _ = await api.deployment()
        now = api.clock()
        keys = Keys(deployed.prefix)
        entries, errors = [], []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                errors.append(
                    {
                        "index": index,
                        "reason": "not_an_object",
                        "detail": "an event must be a JSON object",
                    }
                )
                continue
            try:
                cid, gender, ts = _check_item(item, deployed, now)
            except ValidationError as error:
                errors.append(
                    {"index": index, "reason": error.reason.value, "detail": error.detail}
                )
                continue
            fields = (
                {"cid": cid, "gender": gender}
                if ts is None
                else {"cid": cid, "gender": gender, "ts": str(ts)}
            )
            entries.append((keys.stream(shard_of(cid, deployed.shards)), fields))
        if errors:
            raise ApiError(422, errors)
        assert api.client is not None
        pipe = api.client.pipeline(transaction=False)
        for stream, fields in entries:
            pipe.xadd(stream, fields)  # type: ignore[arg-type]
        await pipe.execute()
        return JSON({"accepted": len(entries)}, 202)

    @app.get(
        "/v1/models",
        response_model=ModelsResponse,
        responses=ERRORS,
        summary="Models with lag, pending and dead-letter counts",
    )
    async def models(request: Request) -> Response:
        api.check_token(request, api.settings.read_token)
        deployed, _ = await api.deployment()
        assert api.client is not None
        rows = await status.collect(api.client, api.registry, deployed)
        described = {m.name: m for m in api.registry}
        return JSON(
            {
                "models": [
                    {
                        "name": r.name,
                        "aliases": list(r.aliases),
                        "description": described[r.name].description,
                        "default": r.name == api.default_model.name,
                        "lag": r.lag,
                        "pending": r.pending,
                        "dead": r.dead,
                        "applied": r.applied,
                        "stalled": r.stalled,
                    }
                    for r in rows
                ]
            }
        )

    @app.get("/healthz", summary="Liveness: the process answers (no I/O)")
    async def healthz(request: Request) -> Response:
        return JSON({"status": "ok"})

    @app.get("/readyz", responses=ERRORS, summary="Readiness: Redis reachable, scripts loaded")
    async def readyz(request: Request) -> Response:
        _, reader = await api.deployment()
        assert api.client is not None
        await api.client.ping()
        await reader.load_scripts()
        return JSON({"status": "ready"})

    @app.get("/metrics", response_class=Response, summary="Prometheus metrics")
    async def metrics(request: Request) -> Response:
        try:
            deployed, _ = await api.deployment()
            assert api.client is not None
            snapshot = await status.collect(api.client, api.registry, deployed)
        except UNAVAILABLE:
            snapshot = []
        return Response(
            api.metrics.render(snapshot), media_type="text/plain; version=0.0.4; charset=utf-8"
        )


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
