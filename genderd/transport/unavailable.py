"""What a Redis server can answer instead of a result, as a few genderd errors.

A server that is unreachable, still loading its data, a read replica asked to write, out of
memory, running a busy script or a cluster without a quorum cannot serve the request *now*; the
request itself is fine and will work later. Each of those states is a subclass of
:class:`RedisUnavailableError`, of the :class:`~genderd.errors.UnavailableError` family, which
the API turns into 503 with ``Retry-After`` (in one exception handler) and the CLI into one
line. Anything else (a wrong type, a script bug) stays the error it was. :func:`translate` is
the one place where the mapping is written. A key of the wrong type is not a server state but
a broken deployment: :func:`wrong_type` says so as a :class:`WrongTypeKeyError` (a
configuration error: one line, exit 2 on the command line).
"""

from __future__ import annotations

from redis import exceptions as redis_errors

from genderd.errors import ConfigurationError, UnavailableError

RETRY_AFTER_S = 1


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


class WrongTypeKeyError(ConfigurationError):
    """A genderd key holds another type of value than genderd keeps there (a ``SET`` over a
    stream key, say): nothing that needs it can work until an operator removes it."""


def wrong_type(error: BaseException) -> WrongTypeKeyError | None:
    """``error`` as a :class:`WrongTypeKeyError` when it is a WRONGTYPE reply, else None. A
    script that checks its keys names the key (``expect_type`` in ``_basics.lua``); a command
    does not, and the message says where to look."""
    message = str(error)
    if not isinstance(error, redis_errors.ResponseError) or not message.startswith("WRONGTYPE"):
        return None
    said = message.removeprefix("WRONGTYPE").split(" script:", 1)[0].strip()
    if said.startswith("Operation against a key"):  # a command's reply: no key named
        said = "a key genderd uses holds another type of value (look for one with TYPE)"
    return WrongTypeKeyError(f"{said}; remove or rename it, then run this again")


def wrong_key(key: str, found: str, expected: str) -> WrongTypeKeyError:
    """The :class:`WrongTypeKeyError` of ``key``, which holds a ``found`` (a Redis type name)
    where genderd keeps a ``expected``, said as :func:`wrong_type` says a script's."""
    return WrongTypeKeyError(
        f"{key} holds a {found}, not a {expected}; remove or rename it, then run this again"
    )


def is_no_script(error: BaseException) -> bool:
    """Whether ``error`` says the server does not have the script (restart, SCRIPT FLUSH)."""
    return isinstance(error, redis_errors.NoScriptError) or (
        isinstance(error, redis_errors.ResponseError) and str(error).startswith("NOSCRIPT")
    )
