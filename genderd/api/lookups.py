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
from genderd.api.state import Api

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


def model_param(request: Request) -> str | None:
    """The ``model`` query parameter. A query of exactly ``model=<name>`` (what clients send)
    is read from the raw query string: building Starlette's ``QueryParams`` costs a lookup
    about 8 µs. Anything else (escapes, other parameters, repeats) goes through it."""
    raw: bytes = request.scope["query_string"]
    if not raw:
        return None
    if raw.startswith(b"model=") and not any(c in raw for c in b"&%+;"):
        return raw[6:].decode("latin-1")
    return request.query_params.get("model")


class Lookups:
    """The lookup endpoints, bound to one app's :class:`~genderd.api.state.Api` (a raw route
    gets only the request; reaching the state through ``request.app.state`` cost ~3 µs)."""

    def __init__(self, api: Api) -> None:
        self.api = api

    async def client_gender(self, request: Request) -> Response:
        """The answer of `model` (name or alias; default: the configured default model)."""
        api = self.api
        api.check_token(request, api.settings.read_token)
        cid = request.path_params["cid"]
        chosen = api.model(model_param(request))
        api.check_cid(cid, ["path", "cid"], request)
        [fields] = await api.fields([cid], [chosen], "client_gender")
        answer = chosen.served(fields)
        if answer is None:
            raise ApiError(404, f"model {chosen.name} has no answer for this client")
        return JSON({"cid": cid, "model": chosen.name, **answer})

    async def client(self, request: Request) -> Response:
        """Every model's answer (null where a model has none)."""
        api = self.api
        api.check_token(request, api.settings.read_token)
        cid = request.path_params["cid"]
        api.check_cid(cid, ["path", "cid"], request)
        models = api.models
        [fields] = await api.fields([cid], models, "client")
        answers = {m.name: m.served(fields) for m in models}
        if all(a is None for a in answers.values()):
            raise ApiError(404, "no model has an answer for this client")
        return JSON({"cid": cid, "models": answers})

    async def lookup(self, request: Request) -> Response:
        """Up to 1,000 clients, in order; `gender` is null for clients without an answer."""
        api = self.api
        api.check_token(request, api.settings.read_token)
        body = lookup_request(
            await read_body(request, api.settings.api_body_timeout_s, MAX_LOOKUP_BODY_BYTES)
        )
        chosen = api.model(body.model, ("body", "model"))
        for i, cid in enumerate(body.cids):
            api.check_cid(cid, ["body", "cids", str(i)])
        hashes = await api.fields(body.cids, [chosen], "lookup")
        results = []
        for cid, fields in zip(body.cids, hashes, strict=True):
            results.append({"cid": cid, **(chosen.served(fields) or NO_ANSWER)})
        return JSON({"model": chosen.name, "results": results})


def install(router: APIRouter, api: Api) -> None:
    """Add the lookup routes, bound to ``api``, to ``router`` (the app's own) as raw routes."""
    endpoints = Lookups(api)
    router.add_api_route(
        "/v1/clients/{cid:path}/gender",
        endpoints.client_gender,
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
        endpoints.client,
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
        endpoints.lookup,
        methods=["POST"],
        route_class_override=RawRoute,
        response_model=LookupResponse,
        responses={
            401: READ_TOKEN,
            413: {"model": Problem, "description": "the body is too large"},
            415: {"model": Problem, "description": "the body is not application/json"},
            422: {"model": ValidationProblem, "description": "a bad body, cid or model"},
            503: UNAVAILABLE,
        },
        summary="Many clients' answers in one round trip",
    )
