"""The deployment's models as recorded in Redis (SPEC §13): which models it runs, whatever
this process has loaded.

A worker records its model when it starts (:func:`record`): its name, kind, class and where it
was loaded from, its aliases, the result-hash fields it writes and the shape of its
per-client keys. Every command reads the records (:func:`read`) and the consumer groups on the
shard streams, so that a model that runs in the deployment is named even where its code is
not loaded (``status`` shows it "not loaded here"; ``lookup`` and the API say why they cannot
answer for it instead of calling it unknown; erasure deletes its keys from the recorded
shape).

``GENDERD_MODELS`` selects the models a process runs and serves; it switches nothing off in
the deployment (``genderd up`` only names the recorded models it leaves out, :func:`left_out`):
workers of those may run elsewhere, and one that dies must show ``STALLED``. An operator
switches a model off, or retires it, explicitly (:mod:`genderd.model_admin`); a worker of it
that starts records it again, switched on. ``status`` shows an off model as ``off``: its group
keeps its place in the streams (switched on again within the retention, it catches up), and it
is neither ``STALLED`` nor ``FAILING``. A retired model's record stays, marked retired, so that
erasure still finds its keys; nothing else shows it.

The records live in one hash (:attr:`genderd.keys.Keys.models`), one JSON value per model.
Every reader tolerates what it cannot read: a record that is not a JSON object, or has a field
of the wrong type or out of bounds, is *unreadable* (:func:`parse`): shown so, and never taken
down with it. A field this release does not know is ignored (a newer release may write one);
in the key shape, one that is set makes the shape custom (keys this release cannot name).
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
from genderd.errors import ConfigurationError, GenderdError
from genderd.events import text
from genderd.keys import Keys
from genderd.models.base import Model
from genderd.models.python import PythonRuntime
from genderd.models.registry import name_problem
from genderd.models.window import WindowRuntime
from genderd.settings import MAX_WINDOW_DAYS
from genderd.transport import AsyncClient, Transport

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
        client: the keys it names that are not of a known shape, or more day buckets than
        :data:`MAX_WINDOW_DAYS`, make it custom)."""
        keys = model.keys
        named = list(model.client_data_keys(0, _PROBE, now_ms))
        state = keys.state(0, model.name, _PROBE) in named
        buckets = [k for k in named if k.startswith(f"{keys.tag(0)}:m:{model.name}:d")]
        days = max(0, len(buckets) - 2)
        if days > MAX_WINDOW_DAYS:
            return cls(custom=True)
        shape = cls(state=state, window_days=days)
        custom = shape.client_data_keys(keys, model.name, 0, _PROBE, now_ms) != named
        return cls(custom=True) if custom else shape

    @classmethod
    def parse(cls, data: object) -> KeyShape:
        """A recorded shape (:class:`UnreadableRecord` when it cannot be used). A field this
        release does not know that is set (a newer release's kind of key) makes it custom:
        only the model's code can name those keys."""
        if not isinstance(data, dict):
            raise UnreadableRecord("'shape' is not an object")
        days = _typed(data, "window_days", int, 0)
        if days > MAX_WINDOW_DAYS:
            raise UnreadableRecord(f"'window_days' is over {MAX_WINDOW_DAYS}")
        known = {f.name for f in dataclasses.fields(cls)}
        newer = any(value for name, value in data.items() if name not in known)
        custom = _typed(data, "custom", bool, False) or newer
        return cls(state=_typed(data, "state", bool, False), window_days=days, custom=custom)

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
    kind: str  # one of KINDS (or a newer release's), "unknown" for a group without a record
    cls: str = ""  # module.QualName of the registered class
    loaded_from: str = ""  # "entry point 'top'", "GENDERD_PLUGINS: mine:Last5"
    aliases: tuple[str, ...] = ()
    description: str = ""
    fields: tuple[str, ...] = ()  # result-hash fields it writes
    shape: KeyShape = field(default_factory=KeyShape)
    on: bool = True  # off: switched off by an operator (genderd models off)
    retired: bool = False  # retired (genderd models retire): kept for erasure only
    started_ms: int = 0  # when a worker of it last started
    recorded: bool = True  # False: only its consumer group was found
    #: why its record cannot be read ("" when it can): it is then shown, and nothing else
    unreadable: str = ""
    grouped: bool = False  # it has a consumer group on some shard (set by with_groups)

    def to_json(self) -> str:
        data = asdict(self)
        for local in ("recorded", "unreadable", "grouped"):
            del data[local]
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, name: str, raw: str | bytes) -> ModelRecord:
        """The record of ``name`` stored as ``raw``; :class:`UnreadableRecord` (a
        ``ValueError``) when it cannot be used. Missing fields take their defaults; fields
        this release does not know are ignored."""
        problem = name_problem(name)
        if problem:
            raise UnreadableRecord(problem)
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, nested beyond reason
            raise UnreadableRecord("not JSON") from None
        if not isinstance(data, dict):
            raise UnreadableRecord("not a JSON object")
        return cls(
            name=name,
            kind=_typed(data, "kind", str, "unknown"),
            cls=_typed(data, "cls", str, ""),
            loaded_from=_typed(data, "loaded_from", str, ""),
            aliases=_names(data, "aliases"),
            description=_typed(data, "description", str, ""),
            fields=_names(data, "fields"),
            shape=KeyShape.parse(data.get("shape", {})),
            on=_typed(data, "on", bool, True),
            retired=_typed(data, "retired", bool, False),
            started_ms=_typed(data, "started_ms", int, 0),
        )

    @property
    def shown(self) -> bool:
        """Whether status and the API show it: a retired model only while it has a group."""
        return not self.retired or self.grouped

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


class UnreadableRecord(GenderdError, ValueError):
    """A model record this release cannot use: the record is skipped and shown as an
    unreadable record, never an error of the command or request that read it."""


_WHAT = {str: "a string", bool: "true or false", int: "a whole number >= 0"}


def _typed(data: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    """``data[name]`` when it is of ``kind`` (an ``int``: not a bool, not negative),
    ``default`` when it is missing; else :class:`UnreadableRecord`."""
    value = data.get(name, default)
    fits = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not fits or (kind is int and value < 0):
        raise UnreadableRecord(f"{name!r} is not {_WHAT[kind]}")
    return value


def _names(data: dict[str, Any], name: str) -> tuple[str, ...]:
    """``data[name]`` as a tuple of strings (empty when missing); else
    :class:`UnreadableRecord`."""
    value = data.get(name, [])
    if not isinstance(value, list) or not all(isinstance(each, str) for each in value):
        raise UnreadableRecord(f"{name!r} is not a list of strings")
    return tuple(value)


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


def parse(name: str, raw: str | bytes) -> ModelRecord:
    """The record of ``name`` stored as ``raw``; an unreadable one as a bare record saying
    why (``kind="unknown"``, :attr:`ModelRecord.unreadable`)."""
    try:
        return ModelRecord.from_json(name, raw)
    except UnreadableRecord as why:
        return ModelRecord(name, "unknown", unreadable=str(why))


def recorded(raw: Mapping[Any, Any]) -> dict[str, ModelRecord]:
    """The records of an ``HGETALL`` of :attr:`Keys.models`, by name (an unreadable one
    too, saying why: see :func:`parse`)."""
    found = {}
    for name, value in raw.items():
        shown = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
        found[shown] = parse(shown, value)
    return found


def with_groups(
    records: Mapping[str, ModelRecord], groups: Iterable[str]
) -> dict[str, ModelRecord]:
    """``records``, each saying whether it has a consumer group in ``groups``, and a bare
    record (``kind="unknown"``, ``recorded=False``) for every group without one, sorted by
    name."""
    grouped = set(groups)
    found = {n: dataclasses.replace(r, grouped=n in grouped) for n, r in records.items()}
    for name in grouped:
        found.setdefault(name, ModelRecord(name, "unknown", recorded=False, grouped=True))
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


def left_out(deployment: Deployment, records: Mapping[str, ModelRecord]) -> list[str]:
    """The models of ``records`` switched on that this process's ``GENDERD_MODELS`` leaves
    out: ``genderd up`` names them (their workers may run elsewhere; it switches none off)."""
    served = set(deployment.registry.names())
    return [
        name
        for name, found in records.items()
        if name not in served and found.on and not found.retired and not found.unreadable
    ]


def others(deployment: Deployment, records: Mapping[str, ModelRecord]) -> list[ModelRecord]:
    """The models of ``records`` this process does not serve (not loaded here, or left out
    by ``GENDERD_MODELS``)."""
    served = set(deployment.registry.names())
    return [found for name, found in records.items() if name not in served]


def not_served(deployment: Deployment, found: ModelRecord) -> str:
    """Why this process does not answer for ``found`` (one line, with the way out)."""
    if found.retired:
        return f"model {found.name!r} is retired in this deployment (genderd models retire)"
    broken = deployment.registry.broken.get(found.name)
    if broken is not None:
        return f"model {found.name!r} cannot be loaded in this process: {broken}"
    if found.unreadable:
        return (
            f"model {found.name!r} has an unreadable record ({found.unreadable}): a worker "
            f"of it records it again as it starts; `genderd models retire {found.name}` "
            "removes it"
        )
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
    custom shape, or a group without a readable record) when that code is not loaded here: an
    erasure must never silently leave data behind. An unreadable record without a group is
    skipped: nothing says it is a model."""
    found_keys: list[ClientKeys] = []
    loaded = deployment.registry.loaded
    for found in others(deployment, records):
        model = loaded.get(found.name)
        if model is not None:
            found_keys.append(model.client_data_keys)
        elif found.unreadable and not found.grouped:
            continue
        elif found.recorded and not found.unreadable and not found.shape.custom:
            shape, name = found.shape, found.name
            found_keys.append(functools.partial(shape.client_data_keys, deployment.keys, name))
        else:
            what = (
                "keeps keys of its own"
                if found.recorded and not found.unreadable
                else "has a group but no readable record"
            )
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
