"""How genderd talks to Redis: one interface (:class:`Transport`), two implementations.

See :mod:`genderd.transport.interface` for what every transport guarantees (script loading,
reply shapes, errors), :mod:`~genderd.transport.pool` and :mod:`~genderd.transport.pipelined`
for the two implementations, and :mod:`~genderd.transport.connect` for how a process opens them.
"""

from genderd.transport.connect import (
    Links,
    SyncClient,
    async_client,
    connect,
    sync_client,
)
from genderd.transport.interface import Command, ScriptCall, Transport
from genderd.transport.pipelined import PipelinedTransport, UnsupportedURLError
from genderd.transport.pool import AsyncClient, PoolTransport
from genderd.transport.unavailable import (
    NoServerError,
    RedisBusyError,
    RedisClusterDownError,
    RedisLoadingError,
    RedisOutOfMemoryError,
    RedisReadOnlyError,
    RedisUnavailableError,
    WrongTypeError,
    translate,
    wrong_type,
)

__all__ = [
    "AsyncClient",
    "Command",
    "Links",
    "NoServerError",
    "PipelinedTransport",
    "PoolTransport",
    "RedisBusyError",
    "RedisClusterDownError",
    "RedisLoadingError",
    "RedisOutOfMemoryError",
    "RedisReadOnlyError",
    "RedisUnavailableError",
    "ScriptCall",
    "SyncClient",
    "Transport",
    "UnsupportedURLError",
    "WrongTypeError",
    "async_client",
    "connect",
    "sync_client",
    "translate",
    "wrong_type",
]
