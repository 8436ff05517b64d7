"""Configuration: one pydantic Settings class, read from ``GENDERD_*`` environment variables.

Settings are built once at the edge (the CLI, a test, later the app factory) and passed down;
nothing in the package reads the environment on its own.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from genderd.clock import MS_PER_DAY, MS_PER_MINUTE

DEFAULT_GENDERS = ("female", "male")
#: GENDERD_DEFAULT_MODEL=best: lookups that name no model answer from the champion (SPEC §14)
BEST = "best"
GENDER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
PREFIX = re.compile(r"[A-Za-z0-9_.-]+")
URL_SCHEMES = ("redis://", "rediss://", "unix://")
#: the longest window of a windowed model, in days (GENDERD_WINDOW_DAYS, a TopWindow's
#: window_days, a recorded model's key shape): its keys per client grow with it
MAX_WINDOW_DAYS = 366


class Settings(BaseSettings):
    """Everything a genderd process needs to know; durations end in ``_ms`` or ``_s``."""

    model_config = SettingsConfigDict(env_prefix="GENDERD_", extra="ignore")

    redis_url: str | None = Field(
        default=None,
        description="redis://, rediss:// or unix:// URL; unset: the bundled server of `genderd up`",
    )
    redis_server: str | None = Field(
        default=None, description="path of the Redis-compatible server binary to bundle"
    )
    cluster: bool = Field(default=False, description="the URL points at a Redis Cluster")
    pipelined: bool = Field(
        default=True,
        description="lookups and script calls share one pipelined connection per process "
        "(standalone servers; false: redis-py's pool, which honours every URL option)",
    )
    prefix: str = Field(
        default="genderd",
        min_length=1,
        max_length=64,
        description="key prefix: letters, digits, '_', '.', '-' (no glob or hash-tag characters)",
    )
    shards: int = Field(
        default=16, ge=1, le=1024, description="stream shards, fixed at first start"
    )
    # NoDecode: the environment gives "female,male,kids", not JSON; the validator splits it.
    genders: Annotated[tuple[str, ...], NoDecode] = Field(
        default=DEFAULT_GENDERS, description="accepted genders, comma separated"
    )
    window_days: int = Field(default=7, ge=1, le=MAX_WINDOW_DAYS)
    # GENDERD_RECENCY_HALF_LIFE_DAYS; None: the model's own (RecencyModel.half_life_days)
    recency_half_life_days: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    # At most a day: top7d looks one day past "now" for events that are ahead of the clock.
    max_future_ms: int = Field(default=5 * MS_PER_MINUTE, ge=0, le=MS_PER_DAY)
    claim_idle_ms: int = Field(default=30_000, ge=100)
    max_deliveries: int = Field(default=5, ge=1)
    retention_days: int = Field(default=30, ge=1)
    client_ttl_days: int = Field(
        default=365,
        ge=0,
        le=36_500,
        description="a client's keys expire this many days after its latest applied event "
        "(0: never); at least the window plus one day",
    )

    default_model: str = Field(
        default="top",
        description="model of a lookup that names none; `best`: the champion of live grading",
    )
    plugins: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="models to load besides the entry points: comma-separated module:Class",
    )
    models: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="the models this deployment runs and serves, comma-separated names or "
        "aliases (empty: every registered model)",
    )
    api_token: str | None = Field(
        default=None,
        description="bearer token required by POST /v1/events and DELETE /v1/clients/{cid}",
    )
    read_token: str | None = Field(
        default=None, description="bearer token required by lookups and /v1/models when set"
    )
    api_host: str = Field(default="127.0.0.1", description="address `genderd serve` binds")
    api_port: int = Field(default=8000, ge=1, le=65535, description="port `genderd serve` binds")
    api_timeout_ms: int = Field(
        default=1_000, ge=50, le=30_000, description="timeout of each Redis call the API makes"
    )

    # Acknowledged means replicated, when asked (genderd.replication, SPEC §12).
    ingest_replicas: int = Field(
        default=0,
        ge=0,
        le=16,
        description="POST /v1/events answers 202 only once the events reached this many "
        "replicas of each master written (WAIT), else 503 (0: once the master has them)",
    )
    ingest_wait_ms: int = Field(
        default=500,
        ge=1,
        le=29_999,
        description="how long ingest waits for GENDERD_INGEST_REPLICAS replicas before "
        "answering 503; less than GENDERD_API_TIMEOUT_MS",
    )

    api_body_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="a request body must arrive within this (408)"
    )
    metrics_cache_s: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="how long /metrics reuses the per-model figures it read from Redis",
    )
    api_limit_concurrency: int = Field(
        default=1024,
        ge=1,
        description="connections and requests one `genderd serve` process takes at once; "
        "beyond it uvicorn answers 503",
    )

    # Ingest with an idempotency key (genderd.ingest, docs/delivery.md: why a day).
    idempotency_ttl_s: int = Field(
        default=86_400,
        ge=1,
        le=30 * 86_400,
        description="how long a request's Idempotency-Key (and a batch key of the Python "
        "producer and `genderd produce --file`) is remembered: a repeat within it writes "
        "nothing twice",
    )

    batch_size: int = Field(default=256, ge=1, le=10_000, description="entries per read and call")
    block_ms: int = Field(
        default=1_000, ge=1, le=4_000, description="how long a read waits for new entries"
    )
    # A second: far beyond any per-event computation a model should make (the built-ins take
    # microseconds), short enough that one stuck event holds its batch back only briefly.
    model_timeout_ms: int = Field(
        default=1_000,
        ge=1,
        description="a Python model's call on one event that takes longer fails that event "
        "(model_error)",
    )
    stall_after_s: float = Field(
        default=30.0, gt=0, description="waiting work with no live consumer this long: stalled"
    )
    failing_rate: float = Field(
        default=0.01,
        gt=0,
        le=1,
        description="a model whose code failed on more than this share of the events it "
        "handled in the last 5 minutes (model_error, at least 20 events) is FAILING",
    )
    state_dir: str = Field(default=".genderd", description="where `genderd up` keeps its server")

    # Live grading and the champion (genderd.grading, SPEC §14).
    grading: bool = Field(
        default=True,
        description="workers grade each event they apply against each model's answer "
        "before it (false/off: no grading, no champion changes)",
    )
    grading_max_delay_s: int = Field(
        default=300,
        ge=0,
        le=86_400,
        description="events arriving more than this after their time are not graded",
    )
    champion_start: str = Field(
        default="top", description="the champion before any change (GENDERD_DEFAULT_MODEL=best)"
    )
    champion_window_s: int = Field(
        default=86_400,
        ge=3_600,
        le=30 * 86_400,
        description="the live grades a champion change is decided on",
    )
    champion_min_events: int = Field(
        default=10_000, ge=1, description="graded events a champion change needs at least"
    )
    champion_check_s: float = Field(
        default=60.0, ge=1, le=86_400, description="how often the champion is checked"
    )

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        # Glob characters would make SCAN patterns (replay) match other deployments' keys;
        # '{', '}' and ':' would break the hash tags and the key layout.
        if not PREFIX.fullmatch(value):
            raise ValueError(f"prefix {value!r} may only contain letters, digits, '_', '.' and '-'")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(URL_SCHEMES):
            raise ValueError(
                f"Redis URL {value!r} must start with {', '.join(URL_SCHEMES)} "
                "(e.g. redis://localhost:6379/0)"
            )
        return value

    @field_validator("api_token", "read_token")
    @classmethod
    def _check_token(cls, value: str | None) -> str | None:
        # An empty token would accept "Authorization: Bearer " (failing open): refuse it.
        if value is not None and not value.strip():
            raise ValueError("a token that is set must not be empty (unset it to turn it off)")
        return value

    @property
    def serves_best(self) -> bool:
        """Whether a lookup that names no model answers from the champion."""
        return self.default_model.strip().lower() == BEST

    def erasure_problem(self) -> str | None:
        """Why the API must not start with these tokens, or None. ``DELETE /v1/clients/{cid}``
        takes the ingest token (``api_token``), and must never be less protected than the
        lookups (SPEC §9): with a read token and no ingest token, erasure would be open to
        anyone while reads are closed."""
        if self.read_token is not None and self.api_token is None:
            return (
                "GENDERD_READ_TOKEN is set but GENDERD_API_TOKEN is not: DELETE /v1/clients/{cid} "
                "would let anyone erase clients they cannot read; set GENDERD_API_TOKEN"
            )
        return None

    @field_validator("plugins", mode="before")
    @classmethod
    def _split_plugins(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple)):
            for path in value:
                module, _, name = str(path).partition(":")
                if not (module and name.isidentifier()):
                    raise ValueError(f"plugin {path!r} must be module:Class")
            return tuple(str(path) for path in value)
        return value

    @field_validator("grading", mode="before")
    @classmethod
    def _on_off(cls, value: object) -> object:
        # GENDERD_GRADING=off reads as it is written (pydantic knows on/off, yes/no, 1/0)
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("genders", mode="before")
    @classmethod
    def _split_genders(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in value.split(",")]
        if isinstance(value, (list, tuple)):
            names = tuple(str(part).strip().lower() for part in value if str(part).strip())
            for name in names:
                if not GENDER_NAME.match(name):
                    raise ValueError(
                        f"gender {name!r} must be lowercase letters, digits, '_' or '-' "
                        "starting with a letter (at most 32 characters)"
                    )
            if not names:
                raise ValueError("at least one gender is required")
            return tuple(sorted(set(names)))
        return value

    @model_validator(mode="after")
    def _check_ingest_wait(self) -> Settings:
        # WAIT holds the API's connection: it must answer before the call times out
        if self.ingest_replicas and self.ingest_wait_ms >= self.api_timeout_ms:
            raise ValueError(
                f"GENDERD_INGEST_WAIT_MS ({self.ingest_wait_ms}) must be less than "
                f"GENDERD_API_TIMEOUT_MS ({self.api_timeout_ms}): WAIT must answer before the "
                "API's Redis call times out"
            )
        return self

    @model_validator(mode="after")
    def _check_client_ttl(self) -> Settings:
        # top7d reads "no window fields in the result hash" as "nothing in the window": the
        # result hash must outlive the client's day buckets (the window, plus a day ahead)
        if self.client_ttl_days and self.client_ttl_days < self.window_days + 1:
            raise ValueError(
                f"GENDERD_CLIENT_TTL_DAYS ({self.client_ttl_days}) must be 0 or at least "
                f"GENDERD_WINDOW_DAYS + 1 ({self.window_days + 1})"
            )
        return self
