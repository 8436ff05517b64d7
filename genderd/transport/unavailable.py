"""What a Redis server can answer instead of a result, as a few genderd errors.

A server that is unreachable, still loading its data, a read replica asked to write, out of
memory, running a busy script or a cluster without a quorum cannot serve the request *now*; the
request itself is fine and will work later. Each of those states is a subclass of
:class:`RedisUnavailableError`, of the :class:`~genderd.errors.UnavailableError` family, which
the API turns into 503 with ``Retry-After`` (in one exception handler) and the CLI into one
line. Anything else (a wrong type, a script bug) stays the error it was. :func:`translate` is
the one place where the mapping is written.

A key of the wrong type (a shard's stream holding a string: written by something else than
genderd) is no server state, but the request is fine too, and works once an operator has
removed the key: the edges that meet one (ingest, the command line) say so with
:func:`wrong_type`, a :class:`WrongTypeError` of the same family. :func:`translate` leaves it
as it is, so that a script's WRONGTYPE error stays the script error its callers handle.
"""

from __future__ import annotations

from redis import exceptions as redis_errors

from genderd.errors import ConfigurationError, UnavailableError

RETRY_AFTER_S = 1
WRONGTYPE = "WRONGTYPE "  # the first word of a reply about a key of another type


class RedisUnavailableError(UnavailableError):
    """Redis cannot serve this request now; retry later."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NoServerError(ConfigurationError):
    """No Redis URL is configured and no `genderd up` server runs from this directory (a
    configuration problem, not a server state: retrying does not help)."""


class RedisLoadingError(RedisUnavailableError):
    """The server is loading its data set (after a restart or a replica sync)."""

    state = "loading"


class RedisReadOnlyError(RedisUnavailableError):
    """A write reached a read-only replica."""

    state = "read-only (a replica)"


class RedisOutOfMemoryError(RedisUnavailableError):
    """A write was refused because ``maxmemory`` is reached."""

    state = "out of memory"


class RedisBusyError(RedisUnavailableError):
    """The server is running a script or function past its time limit."""

    state = "busy"


class RedisClusterDownError(RedisUnavailableError):
    """The cluster cannot serve the slot now (down, failing over, or resharding)."""

    state = "cluster down"


class WrongTypeError(RedisUnavailableError):
    """A genderd key holds another type (e.g. a shard's stream key holding a string): what
    needed it was not done (an ingest part: nothing of it written). Not a server state that
    passes by itself, but like one the request is fine, and works once an operator has
    removed the key."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.state = f"holding the wrong type of key: {message}"


def wrong_type(error: BaseException) -> WrongTypeError | None:
    """``error`` as a :class:`WrongTypeError` when it is a WRONGTYPE reply, else None. A
    genderd script's reply names the key (``WRONGTYPE <key> holds a string, not a stream``);
    a command's says only what the server says."""
    message = str(error)
    if isinstance(error, redis_errors.ResponseError) and message.startswith(WRONGTYPE):
        return WrongTypeError(message[len(WRONGTYPE) :].split(" script:", 1)[0].strip())
    return None


# The first word of an error reply -> its genderd error.
_BY_CODE: dict[str, type[RedisUnavailableError]] = {
    "LOADING": RedisLoadingError,
    "READONLY": RedisReadOnlyError,
    "OOM": RedisOutOfMemoryError,
    "BUSY": RedisBusyError,
    "MASTERDOWN": RedisClusterDownError,
    "CLUSTERDOWN": RedisClusterDownError,
    "TRYAGAIN": RedisClusterDownError,
    "NOREPLICAS": RedisUnavailableError,
}
# redis-py's own classes of the same states (it parses some replies itself).
_BY_CLASS: tuple[tuple[type[Exception], type[RedisUnavailableError]], ...] = (
    (redis_errors.BusyLoadingError, RedisLoadingError),  # before ConnectionError: a subclass
    (redis_errors.ReadOnlyError, RedisReadOnlyError),
    (redis_errors.OutOfMemoryError, RedisOutOfMemoryError),
    (redis_errors.ClusterDownError, RedisClusterDownError),
    (redis_errors.TryAgainError, RedisClusterDownError),
    (redis_errors.MasterDownError, RedisClusterDownError),
    (redis_errors.ClusterError, RedisClusterDownError),
    (redis_errors.ConnectionError, RedisUnavailableError),
    (redis_errors.TimeoutError, RedisUnavailableError),
    (ConnectionError, RedisUnavailableError),  # OSError family: refused, reset
    (TimeoutError, RedisUnavailableError),
)


def translate(error: BaseException) -> BaseException:
    """The genderd error for ``error`` when it is a "not now" state, else ``error`` itself."""
    if isinstance(error, RedisUnavailableError):
        return error
    if isinstance(error, redis_errors.ResponseError):
        code = str(error).split(" ", 1)[0]
        kind = _BY_CODE.get(code)
        if kind is not None:
            return kind(f"Redis is {kind.state}: {error}")
    for cls, kind in _BY_CLASS:
        if isinstance(error, cls):
            what = error or type(error).__name__
            if kind is RedisUnavailableError:
                return kind(f"cannot reach Redis: {what}")
            return kind(f"Redis is {kind.state}: {what}")
    return error


def is_no_script(error: BaseException) -> bool:
    """Whether ``error`` says the server does not have the script (restart, SCRIPT FLUSH)."""
    return isinstance(error, redis_errors.NoScriptError) or (
        isinstance(error, redis_errors.ResponseError) and str(error).startswith("NOSCRIPT")
    )
