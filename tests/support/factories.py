"""Building the pipeline's objects in tests, from a redis-py client and settings.

Production code builds a :class:`~genderd.deployment.Deployment` and
:class:`~genderd.transport.Links` once at the edge; tests often want a worker or a reader with
a fake clock on a given client (a real one, a cluster client or fakeredis), which these do in
one call.
"""

from __future__ import annotations

from typing import Any

from genderd.clock import Clock, wall_clock_ms
from genderd.deployment import Deployment
from genderd.models.base import Model
from genderd.producer import Producer
from genderd.reader import Reader
from genderd.settings import Settings
from genderd.transport import Links
from genderd.worker import Worker


def make_worker(
    client: Any,
    model: Model | str,
    settings: Settings,
    *,
    clock: Clock = wall_clock_ms,
    consumer: str | None = None,
    deployment: Deployment | None = None,
) -> Worker:
    """A worker of ``model`` over ``client`` (all commands through its pool), in
    ``deployment`` (default: built from ``settings`` and ``clock``, oldest layout 1)."""
    deployment = deployment or Deployment.build(settings, clock)
    chosen = deployment.model(model if isinstance(model, str) else model.name)
    return Worker(deployment, Links.over(client), chosen, consumer=consumer)


def make_reader(
    client: Any, settings: Settings, *, clock: Clock = wall_clock_ms, oldest_layout: int = 1
) -> Reader:
    """A reader over ``client`` (of a deployment whose oldest data layout is
    ``oldest_layout``)."""
    return Reader(Deployment.build(settings, clock, oldest_layout), Links.over(client).fast)


def make_producer(
    client: Any, settings: Settings, *, clock: Clock = wall_clock_ms, **options: Any
) -> Producer:
    """A producer writing through the blocking ``client``."""
    return Producer(client, Deployment.build(settings, clock), **options)


async def stopped(client: Any, settings: Settings, model: str) -> None:
    """The consumers of ``model`` that a test's steps read with stand for workers that have
    stopped: remove them from the model's groups, as a stopping worker does (one killed counts
    as gone after ``stall_after_s``), so that a replay does not wait for them to pause."""
    keys = Deployment.build(settings).keys
    for shard in range(settings.shards):
        stream = keys.stream(shard)
        if not await client.exists(stream):
            continue
        groups = {_text(g["name"]) for g in await client.xinfo_groups(stream)}
        if model not in groups:
            continue
        for consumer in await client.xinfo_consumers(stream, model):
            await client.xgroup_delconsumer(stream, model, _text(consumer["name"]))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
