"""The deployment: the facts every genderd process of one installation must agree on.

A :class:`Deployment` is built once at the edge (a CLI command, the API on its first request,
a worker at start) and passed to everything that reads or writes the deployment's data: the
settings completed with the shard count stored in Redis, the key builder, the models and the
clock. Nothing else patches the settings or builds keys.

A new deployment also records the data layout it is written in (:mod:`genderd.layout`).

The shard count is fixed when the deployment is first initialised (``HSETNX`` on the meta
hash) so that every producer and worker computes the same shard of a client. Opening reads
the stored count first and writes only when there is none, so processes that only read
(lookups, status) write nothing on an initialised deployment.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass

from redis import exceptions as redis_errors

from genderd.clock import Clock, wall_clock_ms
from genderd.keys import Keys, shard_of
from genderd.layout import CREATED_LAYOUT_FIELD, LAYOUT, LAYOUT_FIELD
from genderd.models.base import Model
from genderd.models.registry import Registry
from genderd.settings import Settings
from genderd.transport.connect import SyncClient
from genderd.transport.pool import AsyncClient

log = logging.getLogger(__name__)

SHARDS_FIELD = "shards"
CREATED_FIELD = "created_ms"


@dataclass(frozen=True)
class Deployment:
    """Settings (with the stored shard count), keys, models and clock of one deployment."""

    settings: Settings
    keys: Keys
    registry: Registry
    clock: Clock = wall_clock_ms

    @classmethod
    def build(cls, settings: Settings, clock: Clock = wall_clock_ms) -> Deployment:
        """The deployment as configured (``settings.shards``), without asking Redis: what a
        new deployment would be, and everything that does not depend on the shard count."""
        keys = keys_of(settings)
        return cls(settings, keys, Registry.load(settings, keys), clock)

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


def _settled(configured: Deployment, stored: bytes | str | None, created: bool) -> Deployment:
    wanted = configured.settings.shards
    shards = int(stored) if stored is not None else wanted
    if not created and shards != wanted:
        log.warning(
            "deployment %r was initialised with %d shards; ignoring GENDERD_SHARDS=%d",
            configured.settings.prefix,
            shards,
            wanted,
        )
    return configured.with_shards(shards)


# What opening a deployment sends, written once for both kinds of client: a generator that
# yields each command and receives its reply (or the error it raised, thrown in), driven by
# open_deployment (asyncio) and open_deployment_sync (blocking).
Command = tuple[str | int, ...]
Opening = Generator[Command, object, Deployment]


def _opening(configured: Deployment) -> Opening:
    meta = configured.keys.meta
    stored = yield ("HGET", meta, SHARDS_FIELD)
    created = False
    if stored is None:
        try:
            created = bool((yield ("HSETNX", meta, SHARDS_FIELD, configured.settings.shards)))
        except redis_errors.ReadOnlyError:  # a replica of an uninitialised deployment
            return configured
        if created:
            yield ("HSETNX", meta, CREATED_FIELD, configured.clock())
            yield ("HSETNX", meta, LAYOUT_FIELD, LAYOUT)
            yield ("HSETNX", meta, CREATED_LAYOUT_FIELD, LAYOUT)
        stored = yield ("HGET", meta, SHARDS_FIELD)
    assert stored is None or isinstance(stored, bytes | str)
    return _settled(configured, stored, created)


class _Steps:
    """Drives :func:`_opening`: the command to send next, until the deployment is opened."""

    def __init__(self, given: Settings | Deployment) -> None:
        self._steps = _opening(_configured(given))
        self.opened: Deployment | None = None
        self.command = next(self._steps)

    def reply(self, reply: object) -> None:
        self._advance(functools.partial(self._steps.send, reply))

    def fail(self, error: Exception) -> None:
        self._advance(functools.partial(self._steps.throw, error))

    def _advance(self, step: Callable[[], Command]) -> None:
        try:
            self.command = step()
        except StopIteration as done:
            self.opened = done.value


async def open_deployment(client: AsyncClient, given: Settings | Deployment) -> Deployment:
    """The deployment with its stored shard count, recording the configured one on first
    start (``given``: the settings, or a deployment built from them with its clock)."""
    steps = _Steps(given)
    while steps.opened is None:
        try:
            reply = await client.execute_command(*steps.command)
        except Exception as error:  # thrown into the steps: they handle what they expect
            steps.fail(error)
        else:
            steps.reply(reply)
    return steps.opened


def open_deployment_sync(client: SyncClient, given: Settings | Deployment) -> Deployment:
    """Blocking twin of :func:`open_deployment` (producers, `genderd up`): the same steps."""
    steps = _Steps(given)
    while steps.opened is None:
        try:
            reply = client.execute_command(*steps.command)  # type: ignore[no-untyped-call]
        except Exception as error:
            steps.fail(error)
        else:
            steps.reply(reply)
    return steps.opened
