"""Connecting to the deployment's Redis: URL resolution, clients, deployment facts."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from genderd import server
from genderd.keys import Keys
from genderd.settings import Settings

log = logging.getLogger(__name__)

SOCKET_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 2.0
HEALTH_CHECK_INTERVAL_S = 15
RETRIES = 1


class NoServerError(RuntimeError):
    """No Redis URL is configured and no `genderd up` server runs from this directory."""


def resolve_url(settings: Settings) -> str:
    """The Redis URL: ``GENDERD_REDIS_URL``, else the server `genderd up` runs here."""
    if settings.redis_url:
        return settings.redis_url
    state = server.read_state(Path(settings.state_dir))
    if state is not None:
        return state.url
    raise NoServerError(
        f"no Redis to talk to: set GENDERD_REDIS_URL, or run `genderd up` in this directory "
        f"(no running server recorded under {settings.state_dir}/)"
    )


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


def sync_client(settings: Settings, url: str | None = None) -> redis.Redis | RedisCluster:
    """A blocking client (CLI commands, producers)."""
    url = url or resolve_url(settings)
    if settings.cluster:
        return RedisCluster.from_url(url, decode_responses=False, **_options(settings, url))
    return redis.Redis.from_url(url, decode_responses=False, **_options(settings, url))


def async_client(
    settings: Settings, url: str | None = None, **extra: Any
) -> aioredis.Redis | AsyncRedisCluster:
    """An asyncio client (workers, the API); one pool per process."""
    url = url or resolve_url(settings)
    options = {**_options(settings, url), **extra}
    options["retry"] = AsyncRetry(NoBackoff(), RETRIES, supported_errors=(RedisConnectionError,))
    if settings.cluster:
        return AsyncRedisCluster.from_url(url, decode_responses=False, **options)
    return aioredis.Redis.from_url(url, decode_responses=False, **options)


def _settle_shards(settings: Settings, stored: bytes | str | None, created: bool) -> int:
    shards = int(stored) if stored is not None else settings.shards
    if not created and shards != settings.shards:
        log.warning(
            "deployment %r was initialised with %d shards; ignoring GENDERD_SHARDS=%d",
            settings.prefix,
            shards,
            settings.shards,
        )
    return shards


def init_deployment(client: redis.Redis | RedisCluster, settings: Settings) -> int:
    """Record the shard count on first start (HSETNX) and return the deployment's count."""
    meta = Keys(settings.prefix).meta
    created = bool(client.hsetnx(meta, "shards", settings.shards))
    if created:
        client.hsetnx(meta, "created_ms", int(time.time() * 1000))
    return _settle_shards(settings, client.hget(meta, "shards"), created)


async def ainit_deployment(client: aioredis.Redis | AsyncRedisCluster, settings: Settings) -> int:
    """Asyncio twin of :func:`init_deployment`."""
    meta = Keys(settings.prefix).meta
    created = bool(await client.hsetnx(meta, "shards", settings.shards))
    if created:
        await client.hsetnx(meta, "created_ms", int(time.time() * 1000))
    return _settle_shards(settings, await client.hget(meta, "shards"), created)
