"""The routes of the HTTP API (SPEC §5)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from genderd import status
from genderd.api.inputs import (
    MAX_LOOKUP_BODY_BYTES,
    check_item,
    event_items,
    lookup_request,
    read_body,
)
from genderd.api.responses import JSON, ApiError
from genderd.api.state import UNAVAILABLE, Api
from genderd.events import ValidationError
from genderd.keys import Keys
from genderd.producer import stream_entry
from genderd.schemas import (
    Accepted,
    ClientAnswers,
    EventErrors,
    GenderAnswer,
    LookupResponse,
    ModelsResponse,
    Problem,
    ValidationProblem,
)

READ_TOKEN: dict[str, Any] = {
    "model": Problem,
    "description": "a read token (GENDERD_READ_TOKEN) is configured and missing",
}
NO_ANSWER = {"gender": None, "scores": None, "last_event_ts": None, "as_of": None}


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


def install_routes(app: FastAPI, api: Api) -> None:  # noqa: C901 - one closure per route
    # The two hottest routes take the raw request: FastAPI's parameter solving costs more
    # than the Redis round trip; their parameters are documented by hand (CID, MODEL).
    @app.get(
        "/v1/clients/{cid:path}/gender",
        response_model=GenderAnswer,
        responses={
            401: READ_TOKEN,
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
            401: READ_TOKEN,
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
        body = lookup_request(await read_body(request, MAX_LOOKUP_BODY_BYTES))
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
        items = event_items(await read_body(request))
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
                cid, gender, ts = check_item(item, deployed, now)
            except ValidationError as error:
                errors.append(
                    {"index": index, "reason": error.reason.value, "detail": error.detail}
                )
                continue
            entries.append(stream_entry(keys, deployed.shards, cid, gender, ts))
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
        responses={401: READ_TOKEN, **ERRORS},
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
