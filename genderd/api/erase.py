"""``DELETE /v1/clients/{cid}``: erase a client (SPEC §9), and ``GET /v1/erasures/{id}``: how
far its scrub is. Both are protected like ingest (and so never less than the lookups).

``DELETE`` answers once the client is marked in every shard and its keys are deleted, one
atomic step per shard whatever the history retained: from then on no lookup answers for it and
nothing brings it back. Its stream entries and dead letters are scrubbed afterwards, in the
background (see :mod:`genderd.erasure`); the answer is 202 with the erasure's id, whose status
says how far that is.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from genderd import catalog, erasure
from genderd.api.lookups import CID, UNAVAILABLE
from genderd.api.responses import JSON, ApiError, RawRoute
from genderd.api.schemas import Erasure, ErasureProgress, Problem, ValidationProblem
from genderd.api.state import api_of

STATUS_PATH = "/v1/erasures/{erasure_id}"
UNAUTHORIZED = {"model": Problem, "description": "a bearer token is configured and missing"}


async def erase(request: Request) -> Response:
    """Mark the client erased and delete its keys; 202 with the erasure's id (the scrub of its
    stream entries and dead letters follows)."""
    api = api_of(request)
    api.check_token(request, api.settings.api_token)
    cid = request.path_params["cid"]
    api.check_cid(cid, ["path", "cid"], request)
    deployment = await api.deployment()
    try:
        done = await erasure.erase(api.connected().fast, deployment, [cid])
    except catalog.ErasureRefused as refused:  # before anything was deleted; the operator's
        return JSON({"detail": str(refused)}, 500)
    api.metrics.erased(done)
    where = STATUS_PATH.format(erasure_id=done.id)
    return JSON(
        {"id": done.id, "cid": cid, "keys": done.keys, "state": erasure.SCRUBBING, "status": where},
        202,
        headers={"Location": where},
    )


async def progress(request: Request) -> Response:
    """An erasure's state and counts: what its scrub deleted so far, shard by shard."""
    api = api_of(request)
    api.check_token(request, api.settings.api_token)
    erasure_id = request.path_params["erasure_id"]
    found = await erasure.status(api.connected().fast, await api.deployment(), erasure_id)
    if found is None:
        raise ApiError(404, "no such erasure (never made, or its record expired)")
    return JSON(found.as_dict())


def install(router: APIRouter) -> None:
    """Add the erasure routes to ``router`` (the app's own; see :mod:`genderd.api.lookups`)."""
    router.add_api_route(
        "/v1/clients/{cid:path}",
        erase,
        methods=["DELETE"],
        route_class_override=RawRoute,
        status_code=202,
        response_model=Erasure,
        responses={
            401: UNAUTHORIZED,
            404: {
                "model": Problem,
                "description": "the path names no client (a line break, which no id has)",
            },
            422: {"model": ValidationProblem, "description": "a bad cid"},
            500: {
                "model": Problem,
                "description": "refused, nothing deleted: a model of the deployment whose keys "
                "only its code knows is not loaded in the API (the detail names it)",
            },
            503: UNAVAILABLE,
        },
        summary="Erase a client: its answers and state now, its stream entries in the background",
        openapi_extra={"parameters": [CID]},
    )
    router.add_api_route(
        STATUS_PATH,
        progress,
        methods=["GET"],
        route_class_override=RawRoute,
        response_model=ErasureProgress,
        responses={
            401: UNAUTHORIZED,
            404: {"model": Problem, "description": "no erasure has that id (or it expired)"},
            503: UNAVAILABLE,
        },
        summary="How far an erasure is: its state and what its scrub deleted",
        openapi_extra={
            "parameters": [
                {
                    "name": "erasure_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                    "description": "the id DELETE /v1/clients/{cid} answered with",
                }
            ]
        },
    )
