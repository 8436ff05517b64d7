"""Per-model, per-shard health: lag, pending, dead letters, applied, stalled, failing."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from genderd import catalog, health, streams
from genderd.deployment import Deployment
from genderd.events import text
from genderd.health import Health
from genderd.pause import PauseState, state_of
from genderd.transport import AsyncClient


@dataclass
class ShardStatus:
    shard: int
    lag: int
    pending: int
    dead: int
    applied: int
    consumers: int
    stalled: bool
    grouped: bool  # the model's consumer group exists on this shard
    oldest_waiting_ms: int | None = None  # id time of the oldest entry not yet applied
    #: all-time live grades (SPEC §14, the stats hash's <model>:graded, :predicted, :correct
    #: of ``_grades.lua``): events graded, of which predicted, of which correct
    graded: tuple[int, int, int] = (0, 0, 0)


@dataclass
class ModelStatus:
    name: str
    aliases: tuple[str, ...]
    description: str
    shards: list[ShardStatus] = field(default_factory=list)
    #: events and model_error failures of the last few minutes (genderd.health)
    recent: Health = field(default_factory=lambda: Health(0, 0))
    failing: bool = False  # the recent failure rate is over GENDERD_FAILING_RATE
    kind: str = ""  # as recorded (genderd.catalog.KINDS), "unknown" for a bare group
    loaded_from: str = ""
    #: None when this process serves the model; else why not (genderd.catalog.not_served)
    not_served: str | None = None
    loaded: bool = True  # its code is loaded in this process (served, or left out)
    off: bool = False  # switched off by an operator (genderd models off)
    #: why its record in <prefix>:models cannot be read ("" when it can: genderd.catalog)
    unreadable: str = ""
    #: a replay pauses the model's workers (never STALLED meanwhile), and whether a replay
    #: died mid-wipe, leaving them paused until a replay of the model runs to its end
    pause: PauseState = field(default_factory=lambda: PauseState(False, False))

    @property
    def lag(self) -> int:
        return sum(s.lag for s in self.shards)

    @property
    def pending(self) -> int:
        return sum(s.pending for s in self.shards)

    @property
    def dead(self) -> int:
        return sum(s.dead for s in self.shards)

    @property
    def applied(self) -> int:
        return sum(s.applied for s in self.shards)

    @property
    def graded(self) -> tuple[int, int, int]:
        """All-time live grades over the shards: events graded, predicted, correct."""
        return (
            sum(s.graded[0] for s in self.shards),
            sum(s.graded[1] for s in self.shards),
            sum(s.graded[2] for s in self.shards),
        )

    @property
    def stalled(self) -> bool:
        """Any shard stalled; never while off, nor for an unreadable record of a model not
        loaded here and without a group (nothing says it is a model that runs)."""
        grouped = any(s.grouped for s in self.shards)
        unknown = bool(self.unreadable) and not self.loaded and not grouped
        return not self.off and not unknown and any(s.stalled for s in self.shards)

    @property
    def oldest_waiting_ms(self) -> int | None:
        """When the oldest entry the model has not applied yet was written (None: none)."""
        times = [s.oldest_waiting_ms for s in self.shards if s.oldest_waiting_ms is not None]
        return min(times) if times else None


def _model_statuses(
    deployment: Deployment, records: dict[str, catalog.ModelRecord]
) -> dict[str, ModelStatus]:
    """A status for every model served here and every other model the deployment records
    or has a group for (named, never dropped: SPEC §13; a retired one only while it has a
    group)."""
    models = {}
    for model in deployment.registry:
        found = records.get(model.name)
        readable = found is not None and not found.unreadable
        models[model.name] = ModelStatus(
            model.name,
            model.aliases,
            model.description,
            kind=found.kind if found and readable else catalog.kind_of(model),
            loaded_from=deployment.registry.where(model.name),
            off=found is not None and not found.on,
            unreadable=found.unreadable if found else "",
        )
    for found in catalog.others(deployment, records):
        if not found.shown:
            continue
        models[found.name] = ModelStatus(
            found.name,
            found.aliases,
            found.description,
            kind=found.kind,
            loaded_from=found.loaded_from,
            not_served=catalog.not_served(deployment, found),
            loaded=found.name in deployment.registry.loaded,
            off=not found.on,
            unreadable=found.unreadable,
        )
    return models


@dataclass(frozen=True)
class _Shard:
    """What :func:`collect` reads of one shard, once: its groups, stats and stream length."""

    shard: int
    groups: dict[str, streams.GroupInfo]
    stats: dict[str, int]
    length: int


async def _read_shards(client: AsyncClient, deployment: Deployment) -> list[_Shard]:
    """Every shard's groups, stats and stream length, read once per :func:`collect`."""
    keys = deployment.keys
    found = []
    for shard in deployment.shards:
        infos = {info.group: info for info in await streams.groups(client, keys, shard)}
        raw_stats = await client.hgetall(keys.stats(shard))
        stats = {text(k): int(v) for k, v in raw_stats.items()}
        found.append(_Shard(shard, infos, stats, int(await client.xlen(keys.stream(shard)))))
    return found


async def _shard_status(
    client: AsyncClient, deployment: Deployment, read: _Shard, model: ModelStatus
) -> ShardStatus:
    """``model``'s status on one shard (its pause already read): see :func:`collect`."""
    stall_ms = deployment.settings.stall_after_s * 1000
    name = model.name
    info = read.groups.get(name)
    if info is None:
        lag, pending, consumers, idle = read.length, 0, 0, None
    else:
        lag, pending, consumers, idle = info.lag, info.pending, info.consumers, info.min_idle_ms
    waiting = lag > 0 or pending > 0
    alive = idle is not None and idle <= stall_ms
    # a group no consumer has read yet (just recreated by a replay) while workers of the
    # model heartbeat: they join it at their next read
    alive = alive or (info is not None and consumers == 0 and model.pause.workers > 0)
    stream = deployment.keys.stream(read.shard)
    return ShardStatus(
        shard=read.shard,
        lag=lag,
        pending=pending,
        dead=read.stats.get(f"{name}:dead", 0),
        applied=read.stats.get(f"{name}:applied", 0),
        consumers=consumers,
        stalled=waiting and not alive and not model.pause.paused,
        grouped=info is not None,
        oldest_waiting_ms=await _oldest_waiting_ms(client, stream, name, info) if waiting else None,
        graded=(
            read.stats.get(f"{name}:graded", 0),
            read.stats.get(f"{name}:predicted", 0),
            read.stats.get(f"{name}:correct", 0),
        ),
    )


async def _judge_failing(
    client: AsyncClient, deployment: Deployment, models: Iterable[ModelStatus]
) -> None:
    """Each model's recent events and failures, and whether it is failing."""
    now = deployment.clock()
    for status in models:
        status.recent = await health.recent(client, deployment.keys, status.name, now)
        # ... and its failures are still there: once they are re-driven (or purged) and none
        # came since, the model is no longer failing, whatever the window still counts
        status.failing = (
            not status.off
            and status.recent.failure_rate > deployment.settings.failing_rate
            and status.dead > 0
        )


async def collect(client: AsyncClient, deployment: Deployment) -> list[ModelStatus]:
    """The status of every model on every shard: the models served here, then the others the
    deployment records or has a consumer group for (:mod:`genderd.catalog`).

    A shard of a model is *stalled* when it has work waiting (lag or pending entries) and no
    consumer of the model has talked to Redis for ``stall_after_s`` (or there is none, unless
    the group has no consumer yet and workers of the model heartbeat), and never while a
    replay pauses the model. A model switched off is never stalled nor failing.
    """
    keys = deployment.keys
    shards = await _read_shards(client, deployment)
    groups = (name for read in shards for name in read.groups)
    records = catalog.with_groups(catalog.recorded(await client.hgetall(keys.models)), groups)
    models = _model_statuses(deployment, records)
    stall_ms = deployment.settings.stall_after_s * 1000
    for name, status in models.items():
        status.pause = await state_of(client, keys, name, stall_ms)
    for read in shards:
        for status in models.values():
            status.shards.append(await _shard_status(client, deployment, read, status))
    await _judge_failing(client, deployment, models.values())
    return list(models.values())


async def _oldest_waiting_ms(
    client: AsyncClient, stream: str, group: str, info: streams.GroupInfo | None
) -> int | None:
    """The id time of the oldest entry of ``stream`` that ``group`` has not applied: its
    oldest pending entry, or the first one after the last delivered (all of them when the
    group does not exist yet)."""
    times = []
    if info is not None and info.pending:
        summary: Any = await client.xpending(stream, group)
        if summary and summary.get("min"):
            times.append(streams.parse_id(text(summary["min"]))[0])
    after = "-" if info is None else f"({info.last_delivered}"
    first: Any = await client.xrange(stream, min=after, max="+", count=1)
    if first:
        times.append(streams.parse_id(text(first[0][0]))[0])
    return min(times) if times else None


@dataclass(frozen=True)
class StreamAhead:
    """A shard stream whose last id is ahead of the clock (an entry written with an explicit
    id in the future): entries without ``ts`` would take that time."""

    shard: int
    last_id: str
    ahead_ms: int


async def streams_ahead(client: AsyncClient, deployment: Deployment) -> list[StreamAhead]:
    """The shard streams whose last generated id is more than ``max_future_ms`` ahead."""
    now = deployment.clock()
    limit = now + deployment.settings.max_future_ms
    found = []
    for shard in deployment.shards:
        try:
            info: Any = await client.xinfo_stream(deployment.keys.stream(shard))
        except ResponseError as error:
            if "no such key" in str(error).lower():
                continue
            raise
        last = text(streams.field(info, "last-generated-id"))
        ms, _ = streams.parse_id(last)
        if ms > limit:
            found.append(StreamAhead(shard, last, ms - now))
    return found
