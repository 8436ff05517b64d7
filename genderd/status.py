"""Per-model, per-shard health: lag, pending, dead letters, applied, stalled, failing."""

from __future__ import annotations

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
    off: bool = False  # switched off: left out by GENDERD_MODELS where `genderd up` runs
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
    def stalled(self) -> bool:
        return not self.off and any(s.stalled for s in self.shards)

    @property
    def oldest_waiting_ms(self) -> int | None:
        """When the oldest entry the model has not applied yet was written (None: none)."""
        times = [s.oldest_waiting_ms for s in self.shards if s.oldest_waiting_ms is not None]
        return min(times) if times else None


def _model_statuses(
    deployment: Deployment, records: dict[str, catalog.ModelRecord]
) -> dict[str, ModelStatus]:
    """A status for every model served here and every other model the deployment records
    or has a group for (named, never dropped: SPEC §13)."""
    models = {}
    for model in deployment.registry:
        found = records.get(model.name)
        models[model.name] = ModelStatus(
            model.name,
            model.aliases,
            model.description,
            kind=found.kind if found else catalog.kind_of(model),
            loaded_from=deployment.registry.where(model.name),
            off=found is not None and not found.on,
        )
    for found in catalog.others(deployment, records):
        models[found.name] = ModelStatus(
            found.name,
            found.aliases,
            found.description,
            kind=found.kind,
            loaded_from=found.loaded_from,
            not_served=catalog.not_served(deployment, found),
            loaded=found.name in deployment.registry.loaded,
            off=not found.on,
        )
    return models


async def collect(client: AsyncClient, deployment: Deployment) -> list[ModelStatus]:
    """The status of every model on every shard: the models served here, then the others the
    deployment records or has a consumer group for (:mod:`genderd.catalog`).

    A shard of a model is *stalled* when it has work waiting (lag or pending entries) and no
    consumer of the model has talked to Redis for ``stall_after_s`` (or there is none, unless
    the group has no consumer yet and workers of the model heartbeat), and never while a
    replay pauses the model. A model switched off is never stalled nor failing.
    """
    keys = deployment.keys
    stall_ms = deployment.settings.stall_after_s * 1000
    shards = []  # per shard: its groups, its stats and its stream's length, read once
    for shard in deployment.shards:
        infos = {info.group: info for info in await streams.groups(client, keys, shard)}
        raw_stats = await client.hgetall(keys.stats(shard))
        stats = {text(k): int(v) for k, v in raw_stats.items()}
        shards.append((shard, infos, stats, int(await client.xlen(keys.stream(shard)))))
    groups = (name for _, infos, _, _ in shards for name in infos)
    records = catalog.with_groups(catalog.recorded(await client.hgetall(keys.models)), groups)
    models = _model_statuses(deployment, records)
    for name, status in models.items():
        status.pause = await state_of(client, keys, name, stall_ms)
    for shard, infos, stats, length in shards:
        for name, status in models.items():
            info = infos.get(name)
            if info is None:
                lag, pending, consumers, idle = length, 0, 0, None
            else:
                lag, pending, consumers, idle = (
                    info.lag,
                    info.pending,
                    info.consumers,
                    info.min_idle_ms,
                )
            waiting = lag > 0 or pending > 0
            alive = idle is not None and idle <= stall_ms
            # a group no consumer has read yet (just recreated by a replay) while workers of
            # the model heartbeat: they join it at their next read
            alive = alive or (info is not None and consumers == 0 and status.pause.workers > 0)
            oldest = (
                await _oldest_waiting_ms(client, keys.stream(shard), name, info)
                if waiting
                else None
            )
            status.shards.append(
                ShardStatus(
                    shard=shard,
                    lag=lag,
                    pending=pending,
                    dead=stats.get(f"{name}:dead", 0),
                    applied=stats.get(f"{name}:applied", 0),
                    consumers=consumers,
                    stalled=waiting and not alive and not status.pause.paused,
                    grouped=info is not None,
                    oldest_waiting_ms=oldest,
                )
            )
    now = deployment.clock()
    for status in models.values():
        status.recent = await health.recent(client, keys, status.name, now)
        # ... and its failures are still there: once they are re-driven (or purged) and none
        # came since, the model is no longer failing, whatever the window still counts
        status.failing = (
            not status.off
            and status.recent.failure_rate > deployment.settings.failing_rate
            and status.dead > 0
        )
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
