"""``DELETE /v1/clients/{cid}``: erase a client (SPEC §9), protected like ingest.

The client is marked and its keys deleted in one atomic step first, so the guarantee holds
from then on even if the caller goes away; the answer comes when its entries are also gone
from its shard stream and the dead letters (see :mod:`genderd.erasure`, and
docs/operations.md for how long that takes).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from genderd import catalog, erasure
from genderd.api.lookups import CID, UNAVAILABLE
from genderd.api.responses import JSON, RawRoute
from genderd.api.schemas import Erasure, Problem, ValidationProblem
from genderd.api.state import api_of


async def erase(request: Request) -> Response:
    """Remove everything genderd holds about the client; 200 with the counts (zero when it
    was unknown)."""
    api = api_of(request)
    api.check_token(request, api.settings.api_token)
    cid = request.path_params["cid"]
    api.check_cid(cid, ["path", "cid"], request)
    deployment = await api.deployment()
    try:
        [done] = await erasure.erase(api.connected().pool, deployment, [cid])
    except catalog.ErasureRefused as refused:  # before anything was deleted; the operator's
        return JSON({"detail": str(refused)}, 500)
    api.metrics.erased(done)
    return JSON({"cid": cid, **done.as_dict()})


def install(router: APIRouter) -> None:
    """Add the erase route to ``router`` (the app's own; see :mod:`genderd.api.lookups`)."""
    router.add_api_route(
        "/v1/clients/{cid:path}",
        erase,
        methods=["DELETE"],
        route_class_override=RawRoute,
        response_model=Erasure,
        responses={
            401: {"model": Problem, "description": "a bearer token is configured and missing"},
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
        summary="Erase a client: every answer, state, stream entry and dead letter",
        openapi_extra={"parameters": [CID]},
    )
