"""The deployment: the facts every genderd process of one installation must agree on.

A :class:`Deployment` is built once at the edge (a CLI command, the API on its first request,
a worker at start) and passed to everything that reads or writes the deployment's data: the
settings completed with the shard count stored in Redis, the key builder, the models and the
clock. Nothing else patches the settings or builds keys.

A new deployment also records the data layout it is written in (:mod:`genderd.layout`), and
opening one reads the oldest layout its data may be in: its models are built with it (scripts
and readers look for earlier layouts' keys and fields only where they may exist).

The shard count is fixed when the deployment is first initialised (``deployment_open.lua``,
one atomic call) so that every producer and worker computes the same shard of a client. The
script writes only when the meta hash has no shard count, so processes that only read
(lookups, status) write nothing on an initialised deployment.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from redis import exceptions as redis_errors

from genderd.clock import Clock, wall_clock_ms
from genderd.errors import InputError
from genderd.keys import Keys, shard_of
from genderd.layout import CREATED_LAYOUT_FIELD, LAYOUT, LAYOUT_FIELD, oldest_of
from genderd.lua import Script
from genderd.models.base import Model
from genderd.models.registry import Registry
from genderd.settings import Settings
from genderd.transport.connect import SyncClient
from genderd.transport.pool import AsyncClient

log = logging.getLogger(__name__)

SHARDS_FIELD = "shards"
CREATED_FIELD = "created_ms"
#: records a new deployment's facts, all or nothing, and returns the stored ones
OPEN = Script.from_files("deployment_open.lua")


@dataclass(frozen=True)
class Deployment:
    """Settings (with the stored shard count), keys, models, clock and oldest data layout
    (:func:`genderd.layout.oldest_layout`; 1, anything, until read from Redis) of one
    deployment. The models are built with the layout: change it with :meth:`with_layout`."""

    settings: Settings
    keys: Keys
    registry: Registry
    clock: Clock = wall_clock_ms
    oldest_layout: int = 1

    @classmethod
    def build(
        cls, settings: Settings, clock: Clock = wall_clock_ms, oldest_layout: int = 1
    ) -> Deployment:
        """The deployment as configured (``settings.shards``), without asking Redis: what a
        new deployment would be, and everything that does not depend on the shard count."""
        keys = keys_of(settings)
        return cls(
            settings, keys, Registry.load(settings, keys, oldest_layout), clock, oldest_layout
        )

    def with_layout(self, oldest_layout: int) -> Deployment:
        """This deployment with its models built for the oldest data layout it may hold."""
        if oldest_layout == self.oldest_layout:
            return self
        registry = self.registry.with_layout(oldest_layout)
        return dataclasses.replace(self, registry=registry, oldest_layout=oldest_layout)

    def with_shards(self, shards: int) -> Deployment:
        """This deployment with the shard count stored in Redis (the one place it is set)."""
        if shards == self.settings.shards:
            return self
        return dataclasses.replace(
            self, settings=self.settings.model_copy(update={"shards": shards})
        )

    def __repr__(self) -> str:
        return (
            f"<Deployment prefix={self.settings.prefix!r} shards={self.settings.shards} "
            f"models={','.join(self.registry.names())}>"
        )

    @property
    def shards(self) -> range:
        return range(self.settings.shards)

    def shard_of(self, cid: str) -> int:
        return shard_of(cid, self.settings.shards)

    def model(self, name_or_alias: str) -> Model:
        """The model called ``name_or_alias`` (raises ``UnknownModelError``)."""
        return self.registry.get(name_or_alias)


def keys_of(settings: Settings) -> Keys:
    """The key builder of ``settings``' prefix: the one place genderd builds it."""
    return Keys(settings.prefix)


def _configured(given: Settings | Deployment) -> Deployment:
    return given if isinstance(given, Deployment) else Deployment.build(given)


def _settled(configured: Deployment, reply: list[Any]) -> Deployment:
    """The deployment as :data:`OPEN` found it: its stored shard count and oldest layout."""
    stored, created_layout, created = reply
    wanted = configured.settings.shards
    shards = int(stored)
    if not created and shards != wanted:
        log.warning(
            "deployment %r was initialised with %d shards; ignoring GENDERD_SHARDS=%d",
            configured.settings.prefix,
            shards,
            wanted,
        )
    return configured.with_shards(shards).with_layout(oldest_of(created_layout))


def _open_args(configured: Deployment) -> list[str | int]:
    """ARGV of :data:`OPEN`."""
    return [
        configured.settings.shards,
        configured.clock(),
        LAYOUT,
        SHARDS_FIELD,
        CREATED_FIELD,
        LAYOUT_FIELD,
        CREATED_LAYOUT_FIELD,
    ]


async def open_deployment(client: AsyncClient, given: Settings | Deployment) -> Deployment:
    """The deployment with its stored shard count and oldest layout, recording the configured
    ones on first start (``given``: the settings, or a deployment built from them with its
    clock). One call of :data:`OPEN`; a replica of an uninitialised deployment gives the
    configured deployment."""
    configured = _configured(given)
    try:
        reply = await client.eval(OPEN.source, 1, configured.keys.meta, *_open_args(configured))
    except redis_errors.ReadOnlyError:
        return configured
    except redis_errors.ResponseError as error:
        raise OPEN.locate(error) from error
    return _settled(configured, reply)


async def read_deployment(client: AsyncClient, given: Settings | Deployment) -> Deployment:
    """The deployment as stored, writing nothing (for readers that must leave the data as
    they found it, such as ``genderd evaluate``); raises :class:`InputError` when the server
    holds no deployment under the configured prefix."""
    configured = _configured(given)
    shards, created_layout = await client.hmget(
        configured.keys.meta, [SHARDS_FIELD, CREATED_LAYOUT_FIELD]
    )
    if shards is None:
        raise InputError(
            f"no genderd deployment with prefix {configured.settings.prefix!r} on this server"
        )
    return _settled(configured, [shards, created_layout, 0])


def open_deployment_sync(client: SyncClient, given: Settings | Deployment) -> Deployment:
    """Blocking twin of :func:`open_deployment` (producers, `genderd up`)."""
    configured = _configured(given)
    try:
        reply = client.eval(OPEN.source, 1, configured.keys.meta, *_open_args(configured))
    except redis_errors.ReadOnlyError:
        return configured
    except redis_errors.ResponseError as error:
        raise OPEN.locate(error) from error
    return _settled(configured, reply)
