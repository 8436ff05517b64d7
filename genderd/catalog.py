"""The deployment's models as recorded in Redis (SPEC §13): which models it runs, whatever
this process has loaded.

A worker records its model when it starts (:func:`record`): its name, kind, class and where it
was loaded from, its aliases, the result-hash fields it writes and the shape of its
per-client keys. Every command reads the records (:func:`read`) and the consumer groups on the
shard streams, so that a model that runs in the deployment is named even where its code is
not loaded (``status`` shows it "not loaded here"; ``lookup`` and the API say why they cannot
answer for it instead of calling it unknown; erasure deletes its keys from the recorded
shape).

``GENDERD_MODELS`` selects the models a deployment runs and serves. ``genderd up`` started
with it marks the recorded models it leaves out *off* (:func:`switch_off`); a worker of an off
model that starts marks it on again. ``status`` shows an off model as ``off``: its group keeps
its place in the streams (switched on again within the retention, it catches up), and it is
neither ``STALLED`` nor ``FAILING``.

The records live in one hash (:attr:`genderd.keys.Keys.models`), one JSON value per model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from genderd.clock import day_of
from genderd.deployment import Deployment
from genderd.errors import ConfigurationError
from genderd.events import text
from genderd.keys import Keys
from genderd.models.base import Model
from genderd.models.python import PythonRuntime
from genderd.models.window import WindowRuntime
from genderd.transport import AsyncClient, SyncClient, Transport

log = logging.getLogger(__name__)

#: a probe client id for working out the shape of a model's keys (never written)
_PROBE = "\x00genderd-probe"
#: the kinds of model, as recorded
KINDS = ("built-in", "python", "window", "lua")


@dataclass(frozen=True)
class KeyShape:
    """The keys a model keeps per client, besides the shared result hash: its state key
    (:meth:`Keys.state`) and day buckets over ``window_days`` (:meth:`Keys.day_bucket`).
    ``custom``: keys of its own, which only its code knows."""

    state: bool = False
    window_days: int = 0
    custom: bool = False

    @classmethod
    def of(cls, model: Model, now_ms: int) -> KeyShape:
        """The shape of ``model``'s :meth:`Model.client_data_keys` (worked out on a probe
        client: the keys it names that are not of a known shape make it custom)."""
        keys = model.keys
        named = list(model.client_data_keys(0, _PROBE, now_ms))
        state = keys.state(0, model.name, _PROBE) in named
        buckets = [k for k in named if k.startswith(f"{keys.tag(0)}:m:{model.name}:d")]
        shape = cls(state=state, window_days=max(0, len(buckets) - 2))
        custom = shape.client_data_keys(keys, model.name, 0, _PROBE, now_ms) != named
        return cls(custom=True) if custom else shape

    def client_data_keys(
        self, keys: Keys, name: str, shard: int, cid: str, now_ms: int
    ) -> list[str]:
        """The keys of this shape that may hold model ``name``'s data of ``cid`` at
        ``now_ms`` (the same list :meth:`Model.client_data_keys` gives for the model)."""
        found = [keys.result(shard, cid)]
        if self.state:
            found.append(keys.state(shard, name, cid))
        if self.window_days:
            today = day_of(now_ms)
            days = range(today - self.window_days, today + 2)
            found += keys.day_buckets(shard, name, days, cid)
        return found


@dataclass(frozen=True)
class ModelRecord:
    """What the deployment knows of one of its models."""

    name: str
    kind: str  # one of KINDS, or "unknown" for a group without a record
    cls: str = ""  # module.QualName of the registered class
    loaded_from: str = ""  # "entry point 'top'", "GENDERD_PLUGINS: mine:Last5"
    aliases: tuple[str, ...] = ()
    description: str = ""
    fields: tuple[str, ...] = ()  # result-hash fields it writes
    shape: KeyShape = field(default_factory=KeyShape)
    on: bool = True  # off: left out by GENDERD_MODELS
    started_ms: int = 0  # when a worker of it last started
    recorded: bool = True  # False: only its consumer group was found

    def to_json(self) -> str:
        data = asdict(self)
        del data["recorded"]
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, name: str, raw: str | bytes) -> ModelRecord:
        data: dict[str, Any] = json.loads(raw)
        return cls(
            name=name,
            kind=str(data.get("kind", "unknown")),
            cls=str(data.get("cls", "")),
            loaded_from=str(data.get("loaded_from", "")),
            aliases=tuple(data.get("aliases", ())),
            description=str(data.get("description", "")),
            fields=tuple(data.get("fields", ())),
            shape=KeyShape(**data.get("shape", {})),
            on=bool(data.get("on", True)),
            started_ms=int(data.get("started_ms", 0)),
        )

    @property
    def plugin(self) -> str | None:
        """The ``module:Class`` that loads it with ``GENDERD_PLUGINS``, if it was loaded so."""
        head = "GENDERD_PLUGINS: "
        return self.loaded_from.removeprefix(head) if self.loaded_from.startswith(head) else None

    def how_to_load(self) -> str:
        """One phrase telling a user how to load this model in their process."""
        if self.plugin:
            return f"set GENDERD_PLUGINS={self.plugin}"
        if self.loaded_from:
            return f"install what registers it ({self.loaded_from})"
        return "load the model that owns this consumer group"


def kind_of(model: Model) -> str:
    """The recorded kind of ``model``."""
    if isinstance(model, PythonRuntime):
        return "python"
    if isinstance(model, WindowRuntime):
        return "window"
    return "built-in" if type(model).__module__.startswith("genderd.") else "lua"


def record_of(deployment: Deployment, model: Model) -> ModelRecord:
    """``model``'s record, as a worker of it records it now."""
    cls = model.defined_by
    now = deployment.clock()
    return ModelRecord(
        name=model.name,
        kind=kind_of(model),
        cls=f"{cls.__module__}.{cls.__qualname__}",
        loaded_from=deployment.registry.where(model.name),
        aliases=tuple(model.aliases),
        description=model.description,
        fields=tuple(model.result_fields()),
        shape=KeyShape.of(model, now),
        started_ms=now,
    )


async def record(client: AsyncClient, deployment: Deployment, model: Model) -> ModelRecord:
    """Record ``model`` as running in the deployment (and switched on): a worker of it starts."""
    found = record_of(deployment, model)
    await client.hset(deployment.keys.models, model.name, found.to_json())
    return found


def recorded(raw: Mapping[Any, Any]) -> dict[str, ModelRecord]:
    """The records of an ``HGETALL`` of :attr:`Keys.models`, by name."""
    return {text(name): ModelRecord.from_json(text(name), value) for name, value in raw.items()}


def with_groups(
    records: Mapping[str, ModelRecord], groups: Iterable[str]
) -> dict[str, ModelRecord]:
    """``records`` and a bare record (``kind="unknown"``, ``recorded=False``) for every
    consumer group in ``groups`` without one, sorted by name."""
    found = dict(records)
    for name in groups:
        found.setdefault(name, ModelRecord(name, "unknown", recorded=False))
    return dict(sorted(found.items()))


async def read(transport: Transport, deployment: Deployment) -> dict[str, ModelRecord]:
    """The recorded models, and every other model with a consumer group on a shard stream, by
    name: one ``HGETALL`` and each shard's ``XINFO GROUPS``, concurrently."""
    raw = _mapping(await transport.execute("HGETALL", deployment.keys.models))

    async def names(shard: int) -> list[str]:
        try:
            infos = await transport.execute("XINFO", "GROUPS", deployment.keys.stream(shard))
        except ResponseError as error:
            if "no such key" in str(error).lower():
                return []
            raise
        return [text(_mapping(info)["name"]) for info in infos]

    per_shard = await asyncio.gather(*(names(shard) for shard in deployment.shards))
    return with_groups(recorded(raw), (name for found in per_shard for name in found))


def switch_off(client: SyncClient, deployment: Deployment) -> list[str]:
    """Mark off the recorded models this process's ``GENDERD_MODELS`` leaves out (where
    `genderd up` runs); return those switched off now."""
    served = set(deployment.registry.names())
    switched = []
    for name, known in recorded(client.hgetall(deployment.keys.models)).items():
        if name not in served and known.on:
            off = dataclasses.replace(known, on=False)
            client.hset(deployment.keys.models, name, off.to_json())
            switched.append(name)
            log.info("model %s is switched off (not in GENDERD_MODELS)", name)
    return switched


def others(deployment: Deployment, records: Mapping[str, ModelRecord]) -> list[ModelRecord]:
    """The models of ``records`` this process does not serve (not loaded here, or left out
    by ``GENDERD_MODELS``)."""
    served = set(deployment.registry.names())
    return [found for name, found in records.items() if name not in served]


def not_served(deployment: Deployment, found: ModelRecord) -> str:
    """Why this process does not answer for ``found`` (one line, with the way out)."""
    if found.name in deployment.registry.loaded:
        return (
            f"model {found.name!r} is left out by GENDERD_MODELS "
            f"({','.join(deployment.registry.names())}) in this process"
        )
    return (
        f"model {found.name!r} runs in this deployment but is not loaded in this process: "
        f"{found.how_to_load()}"
    )


#: the keys of one client a model may hold data in: (shard, cid, now_ms) -> keys
ClientKeys = Callable[[int, str, int], list[str]]


def _mapping(reply: Any) -> dict[str, Any]:
    """A map reply (RESP3, or parsed by redis-py) or a flat list of pairs (RESP2, raw), with
    text keys."""
    if isinstance(reply, dict):
        return {text(k): v for k, v in reply.items()}
    return {text(k): v for k, v in zip(reply[::2], reply[1::2], strict=True)}


def erasure_keys(deployment: Deployment, records: Mapping[str, ModelRecord]) -> list[ClientKeys]:
    """What erasure must delete besides the served models' keys: the keys of every other
    model of ``records`` (from its code when it is loaded here, else from its recorded
    shape). Raises :class:`ConfigurationError` for a model whose keys only its code knows (a
    custom shape, or a group without a record) when that code is not loaded here: an erasure
    must never silently leave data behind."""
    found_keys: list[ClientKeys] = []
    loaded = deployment.registry.loaded
    for found in others(deployment, records):
        model = loaded.get(found.name)
        if model is not None:
            found_keys.append(model.client_data_keys)
        elif found.recorded and not found.shape.custom:
            shape, name = found.shape, found.name
            found_keys.append(functools.partial(shape.client_data_keys, deployment.keys, name))
        else:
            what = "keeps keys of its own" if found.recorded else "has a group but no record"
            raise ErasureRefused(
                f"cannot erase: model {found.name!r} {what} and is not loaded here; "
                f"{found.how_to_load()} and erase again"
            )
    return found_keys


class ErasureRefused(ConfigurationError, RuntimeError):
    """An erasure that would leave a model's data behind (its code is not loaded here and
    its keys are its own): refused before anything is deleted."""


def find(records: Mapping[str, ModelRecord], name_or_alias: str) -> ModelRecord | None:
    """The record answering to ``name_or_alias`` (its name or a recorded alias), or None."""
    wanted = name_or_alias.strip().lower()
    for found in records.values():
        if wanted in (found.name, *found.aliases):
            return found
    return None
