"""The hot routes: lookups of one client, all models of a client, and batch lookups.

:func:`install` adds them to the app's own router as :class:`~genderd.api.responses.RawRoute`s:
called with the raw request, no FastAPI parameter solving (which costs as much as the Redis
round trip). Each parses what it needs itself; the parameters are documented by hand. Ordinary
routes belong in the other route modules.

Routes are added to the app's router directly, not through ``include_router``: FastAPI 0.165
matches an included router's routes through an extra layer per request, which cost the
no-I/O route a quarter of its rate (measured in-process: 27 µs a request before, 42 µs after).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from genderd.api.inputs import MAX_LOOKUP_BODY_BYTES, lookup_request, read_body
from genderd.api.responses import JSON, ApiError, RawRoute
from genderd.api.schemas import (
    ClientAnswers,
    GenderAnswer,
    LookupResponse,
    Problem,
    ValidationProblem,
)
from genderd.api.state import api_of

READ_TOKEN: dict[str, Any] = {
    "model": Problem,
    "description": "a read token (GENDERD_READ_TOKEN) is configured and missing",
}
UNAVAILABLE: dict[str, Any] = {
    "model": Problem,
    "description": "Redis cannot serve the request now (see Retry-After)",
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


async def client_gender(request: Request) -> Response:
    """The answer of `model` (name or alias; default: the configured default model)."""
    api = api_of(request)
    api.check_token(request, api.settings.read_token)
    cid = request.path_params["cid"]
    chosen = api.model(request.query_params.get("model"))
    api.check_cid(cid, ["path", "cid"], request)
    [fields] = await api.fields([cid], [chosen], "client_gender")
    answer = chosen.answer(fields)
    if answer is None:
        raise ApiError(404, f"model {chosen.name} has no answer for this client")
    return JSON({"cid": cid, "model": chosen.name, **answer.to_json()})


async def client(request: Request) -> Response:
    api = api_of(request)
    api.check_token(request, api.settings.read_token)
    cid = request.path_params["cid"]
    api.check_cid(cid, ["path", "cid"], request)
    models = list(api.configured.registry)
    [fields] = await api.fields([cid], models, "client")
    answers = {m.name: m.answer(fields) for m in models}
    if all(a is None for a in answers.values()):
        raise ApiError(404, "no model has an answer for this client")
    return JSON({"cid": cid, "models": {name: a and a.to_json() for name, a in answers.items()}})


async def lookup(request: Request) -> Response:
    """Up to 1,000 clients, in order; `gender` is null for clients without an answer."""
    api = api_of(request)
    api.check_token(request, api.settings.read_token)
    body = lookup_request(await read_body(request, MAX_LOOKUP_BODY_BYTES))
    chosen = api.model(body.model, ("body", "model"))
    for i, cid in enumerate(body.cids):
        api.check_cid(cid, ["body", "cids", str(i)])
    hashes = await api.fields(body.cids, [chosen], "lookup")
    results = []
    for cid, fields in zip(body.cids, hashes, strict=True):
        answer = chosen.answer(fields)
        results.append({"cid": cid, **(answer.to_json() if answer else NO_ANSWER)})
    return JSON({"model": chosen.name, "results": results})


def install(router: APIRouter) -> None:
    """Add the lookup routes to ``router`` (the app's own) as raw routes."""
    router.add_api_route(
        "/v1/clients/{cid:path}/gender",
        client_gender,
        methods=["GET"],
        route_class_override=RawRoute,
        response_model=GenderAnswer,
        responses={
            401: READ_TOKEN,
            404: {"model": Problem, "description": "the model has no answer"},
            422: {"model": ValidationProblem, "description": "a bad cid or unknown model"},
            503: UNAVAILABLE,
        },
        summary="One model's answer for a client",
        openapi_extra={"parameters": [CID, MODEL]},
    )
    router.add_api_route(
        "/v1/clients/{cid:path}",
        client,
        methods=["GET"],
        route_class_override=RawRoute,
        response_model=ClientAnswers,
        responses={
            401: READ_TOKEN,
            404: {"model": Problem, "description": "no model knows the client"},
            422: {"model": ValidationProblem, "description": "a bad cid"},
            503: UNAVAILABLE,
        },
        summary="Every model's answer for a client",
        openapi_extra={"parameters": [CID]},
    )
    router.add_api_route(
        "/v1/lookup",
        lookup,
        methods=["POST"],
        route_class_override=RawRoute,
        response_model=LookupResponse,
        responses={
            401: READ_TOKEN,
            413: {"model": Problem, "description": "the body is too large"},
            422: {"model": ValidationProblem, "description": "a bad body, cid or model"},
            503: UNAVAILABLE,
        },
        summary="Many clients' answers in one round trip",
    )
