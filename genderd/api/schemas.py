"""Pydantic models of the HTTP API: they document it (OpenAPI) and validate request bodies.

Answers are *not* built through these models at request time: a lookup returns JSON encoded
straight from what Redis holds (see :mod:`genderd.api`); the models describe that JSON.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MAX_LOOKUP_CIDS = 1_000
MAX_INGEST_EVENTS = 10_000

EXAMPLE_TS = 1795696300000


class GenderAnswer(BaseModel):
    """One model's answer for one client."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "cid": "C42",
                    "model": "top",
                    "gender": "female",
                    "scores": {"female": 18, "male": 3},
                    "last_event_ts": EXAMPLE_TS,
                    "as_of": EXAMPLE_TS + 512,
                }
            ]
        }
    )

    cid: str
    model: str = Field(description="canonical model name (aliases are resolved)")
    gender: str
    scores: dict[str, int] | None = Field(
        description="per-gender event counts behind the answer; null for `last`"
    )
    last_event_ts: int = Field(description="ms since the epoch of the newest event counted")
    as_of: int = Field(description="ms since the epoch when the stored answer was computed")


class ModelAnswer(BaseModel):
    gender: str
    scores: dict[str, int] | None
    last_event_ts: int
    as_of: int


class ClientAnswers(BaseModel):
    """Every model's answer for one client (null where a model has none)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "cid": "C42",
                    "models": {
                        "last": {
                            "gender": "female",
                            "scores": None,
                            "last_event_ts": EXAMPLE_TS,
                            "as_of": EXAMPLE_TS + 2,
                        },
                        "top": {
                            "gender": "female",
                            "scores": {"female": 18, "male": 3},
                            "last_event_ts": EXAMPLE_TS,
                            "as_of": EXAMPLE_TS + 3,
                        },
                        "top7d": None,
                    },
                }
            ]
        }
    )

    cid: str
    models: dict[str, ModelAnswer | None]


class LookupRequest(BaseModel):
    """Up to 1,000 clients, answered in order in one Redis round trip."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"cids": ["C1", "C2"], "model": "top"}]},
    )

    cids: list[str] = Field(min_length=1, max_length=MAX_LOOKUP_CIDS)
    model: str | None = Field(default=None, description="name or alias; default: the default model")


class LookupItem(BaseModel):
    cid: str
    gender: str | None = Field(description="null when the model has no answer for the client")
    scores: dict[str, int] | None = None
    last_event_ts: int | None = None
    as_of: int | None = None


class LookupResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "top",
                    "results": [
                        {
                            "cid": "C1",
                            "gender": "male",
                            "scores": {"male": 4},
                            "last_event_ts": EXAMPLE_TS,
                            "as_of": EXAMPLE_TS + 7,
                        },
                        {
                            "cid": "C2",
                            "gender": None,
                            "scores": None,
                            "last_event_ts": None,
                            "as_of": None,
                        },
                    ],
                }
            ]
        }
    )

    model: str
    results: list[LookupItem]


class EventIn(BaseModel):
    """A page view. Validated exactly as the workers validate stream entries."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"examples": [{"cid": "C9", "gender": "female", "ts": EXAMPLE_TS}]},
    )

    cid: str = Field(description="1-128 characters, no whitespace or control characters")
    gender: str = Field(description="one of the configured genders (trimmed, case-insensitive)")
    ts: int | None = Field(
        default=None, description="event time, ms since the epoch; default: arrival time"
    )


class EventBatch(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"events": [{"cid": "C9", "gender": "female"}, {"cid": "C10", "gender": "male"}]}
            ]
        }
    )

    events: list[EventIn] = Field(min_length=1, max_length=MAX_INGEST_EVENTS)


class Accepted(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"accepted": 2}]})

    accepted: int


class Erasure(BaseModel):
    """What DELETE /v1/clients/{cid} did before answering; the scrub of the client's stream
    entries and dead letters follows (its counts come with the erasure's status)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "3f9c2a7d51e04b86",
                    "cid": "c-123",
                    "keys": 3,
                    "state": "scrubbing",
                    "status": "/v1/erasures/3f9c2a7d51e04b86",
                }
            ]
        }
    )

    id: str = Field(description="the erasure's id: GET /v1/erasures/{id} says how far it is")
    cid: str
    keys: int = Field(description="keys deleted: result hash, counters, day buckets")
    state: str = Field(description="`scrubbing`: stream entries and dead letters still to go")
    status: str = Field(description="where the erasure's status is (also the Location header)")


class ShardScrubbing(BaseModel):
    shard: int
    pass_: int = Field(alias="pass", description="the shard's scrub pass running (or the last)")
    waits_for_pass: int = Field(description="the pass that completes the erasure in the shard")
    phase: str = Field(description="events, aside, dead, tidy; `waiting` between passes")
    read: int = Field(description="entries read by the running pass so far")


class ErasureProgress(BaseModel):
    """An erasure's record and the progress of its scrub (no client id: SPEC 9)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "3f9c2a7d51e04b86",
                    "state": "done",
                    "created_ms": EXAMPLE_TS,
                    "done_ms": EXAMPLE_TS + 41_870,
                    "clients": 1,
                    "digest": "9f86d081884c7d659a2feaa0c55ad015",
                    "keys": 3,
                    "entries": 41,
                    "dead_letters": 0,
                    "shards": 16,
                    "shards_scrubbed": 16,
                    "scrubbing": [],
                }
            ]
        }
    )

    id: str
    state: str = Field(description="`marking`, `scrubbing` or `done`")
    created_ms: int
    done_ms: int | None = Field(description="when the last shard's scrub completed it")
    clients: int = Field(description="clients the erasure erased (one for DELETE)")
    digest: str | None = Field(description="the client's digest, as logged; null for several")
    keys: int = Field(description="keys deleted when the erasure was made")
    entries: int = Field(description="stream entries of the clients deleted so far")
    dead_letters: int = Field(description="dead letters of the clients deleted so far")
    shards: int
    shards_scrubbed: int = Field(description="shards whose scrub has completed the erasure")
    scrubbing: list[ShardScrubbing] = Field(description="the shards still scrubbing for it")


class BadEvent(BaseModel):
    index: int = Field(description="position of the event in the request (0 for a single one)")
    reason: str = Field(description="machine-readable reason, as in the dead letters")
    detail: str


class BadEvents(BaseModel):
    detail: list[BadEvent]


class ModelInfo(BaseModel):
    name: str
    aliases: list[str]
    description: str
    default: bool
    served: bool = Field(description="this API answers for the model")
    not_served: str | None = Field(
        description="why not: not loaded in the API's process (or its entry point cannot be "
        "loaded), left out by GENDERD_MODELS, or its record cannot be read"
    )
    kind: str = Field(
        description="built-in, python, window, lua; unknown: a bare group or an unreadable record"
    )
    off: bool = Field(description="switched off by an operator (genderd models off)")
    unreadable_record: str | None = Field(
        description="why its record in <prefix>:models cannot be read (null when it can): "
        "the model is listed, nothing else is taken from the record"
    )
    lag: int = Field(description="entries not yet delivered to the model's group")
    pending: int = Field(description="entries delivered and not yet acknowledged")
    dead: int = Field(description="entries the model dead-lettered")
    applied: int = Field(description="entries the model applied")
    stalled: bool
    grading: Grading | None = Field(
        description="live grades over the window asked for (null: not graded here)"
    )


class Bounds(BaseModel):
    low: float
    high: float


class VersusChampion(BaseModel):
    champion: str
    difference: float = Field(description="accuracy_all of the model minus the champion's")
    interval: Bounds = Field(description="95%, simultaneous over the challengers")
    p_value: float
    p_adjusted: float = Field(description="Holm over the challengers")
    significant: bool
    challengers: int


class Grading(BaseModel):
    """A model's live grades over the window (SPEC §14)."""

    window_s: int
    events: int = Field(description="events graded: applied within the delay limit")
    predicted: int = Field(description="of which the model had an answer before")
    correct: int = Field(description="of which the answer was the event's gender")
    client_groups: int = Field(description="client groups with graded events (the clusters)")
    accuracy: float | None
    accuracy_interval: Bounds | None
    accuracy_all: float | None = Field(description="correct over all events graded")
    accuracy_all_interval: Bounds | None
    versus_champion: VersusChampion | None


class ChampionInfo(BaseModel):
    """The champion of live grading: lookups that name no model answer from it with
    GENDERD_DEFAULT_MODEL=best."""

    model: str
    since_ms: int | None
    pinned: bool
    evidence: dict[str, Any] | None = Field(description="why it is the champion")
    checked_ms: int | None
    behind: str | None = Field(description="at the last check, a model it is significantly behind")
    recorded: bool = Field(description="false: no change yet, the start model")
    served_by_default: bool


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    champion: ChampionInfo


class Problem(BaseModel):
    detail: str


class InvalidItem(BaseModel):
    loc: list[str] = Field(description='where: e.g. ["path", "cid"] or ["body", "cids", "2"]')
    msg: str
    type: str = Field(
        description="machine-readable: bad_cid, unknown_model, model_not_served, or pydantic's type"
    )


class ValidationProblem(BaseModel):
    """A 422 in FastAPI's layout."""

    detail: list[InvalidItem]
