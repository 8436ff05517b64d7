"""Connecting to the deployment's Redis: redis-py clients and the transports.

The URL is resolved at the edge (:mod:`genderd.discovery`) and given here, in
``settings.redis_url`` or as an argument: the transport finds and starts no server.

A process opens its :class:`Links` once at the edge (a CLI command, the API's start, a worker)
and passes them down: ``pool`` (redis-py; typed stream and admin commands, blocking reads)
and ``fast`` (lookups and script calls: the pipelined connection on a standalone server, the
pool itself on Cluster or with ``GENDERD_PIPELINED=false``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from genderd.settings import Settings
from genderd.transport.interface import Transport
from genderd.transport.pipelined import PipelinedTransport, url_options
from genderd.transport.pool import AsyncClient, PoolTransport
from genderd.transport.unavailable import NoServerError

log = logging.getLogger(__name__)

SOCKET_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 2.0
HEALTH_CHECK_INTERVAL_S = 15
RETRIES = 1

SyncClient = redis.Redis | RedisCluster


def url_of(settings: Settings, url: str | None = None) -> str:
    """``url``, else ``settings.redis_url`` (resolved at the edge: :mod:`genderd.discovery`)."""
    found = url or settings.redis_url
    if not found:
        raise NoServerError(
            "no Redis URL given: set GENDERD_REDIS_URL (genderd's commands find the server of a "
            "`genderd up` in their directory by themselves)"
        )
    return found


def _options(settings: Settings, url: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        # redis-py retries 10 times with backoff by default; genderd's callers have their own
        # backoff (workers) or must answer fast (the API), so a lost connection is retried
        # once, at once (a stale pooled connection after a server restart), then reported;
        # a timeout is not retried (it would double the wait on a stalled server).
        "retry": Retry(NoBackoff(), RETRIES, supported_errors=(RedisConnectionError,)),
    }
    if not settings.cluster and not url.startswith("unix://"):
        options["socket_keepalive"] = True
    return options


def sync_client(settings: Settings, url: str | None = None) -> SyncClient:
    """A blocking client (producers, `genderd up`)."""
    url = url_of(settings, url)
    if settings.cluster:
        return RedisCluster.from_url(url, decode_responses=False, **_options(settings, url))
    return redis.Redis.from_url(url, decode_responses=False, **_options(settings, url))


def async_client(settings: Settings, url: str | None = None, **extra: Any) -> AsyncClient:
    """An asyncio client (workers, the API, CLI commands); one pool per process."""
    url = url_of(settings, url)
    options = {**_options(settings, url), **extra}
    options["retry"] = AsyncRetry(NoBackoff(), RETRIES, supported_errors=(RedisConnectionError,))
    if settings.cluster:
        return AsyncRedisCluster.from_url(url, decode_responses=False, **options)
    return aioredis.Redis.from_url(url, decode_responses=False, **options)


@dataclass(frozen=True)
class Links:
    """A process's ways to its Redis: the pool, and the transport for hot calls."""

    pool: PoolTransport
    fast: Transport

    @classmethod
    def over(cls, client: AsyncClient) -> Links:
        """Everything through one redis-py client (tests, fakeredis, Cluster)."""
        pool = PoolTransport(client)
        return cls(pool, pool)

    @property
    def client(self) -> AsyncClient:
        """The redis-py client of the pool (typed stream and admin commands)."""
        return self.pool.client

    async def close(self) -> None:
        if self.fast is not self.pool:
            await self.fast.close()
        await self.pool.close()


def check_url(settings: Settings, url: str) -> None:
    """Raise :class:`~genderd.transport.pipelined.UnsupportedURLError` now if :func:`connect`
    would (a command that starts other processes checks before it starts them)."""
    if settings.pipelined and not settings.cluster:
        url_options(url)


def connect(
    settings: Settings, url: str | None = None, timeout_s: float = SOCKET_TIMEOUT_S, **pool: Any
) -> Links:
    """Open a process's :class:`Links` (no I/O yet: connections open on first use).

    Raises :class:`~genderd.transport.pipelined.UnsupportedURLError` for URL options the
    pipelined connection would ignore, before anything is sent.
    """
    url = url_of(settings, url)
    fast = None
    if settings.pipelined and not settings.cluster:
        fast = PipelinedTransport(url, timeout_s)
    client = async_client(settings, url, **pool)
    transport = PoolTransport(client)
    return Links(transport, fast or transport)
