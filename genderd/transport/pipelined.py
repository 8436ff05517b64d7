"""The pipelined transport: one hiredis connection shared by every concurrent call of a process.

A lookup is a single command. Through redis-py's pool each one pays a pool checkout, Python
command packing, its own socket write and a connection release; here concurrent requests queue
their commands (packed by hiredis) on one connection, the commands queued in one turn of the
event loop leave in one write, and the replies, which Redis returns in order, resolve their
futures first-in first-out (parsed by hiredis). Redis runs commands one at a time anyway, so
one connection loses no server throughput, and a lookup costs the API a few microseconds.
Workers send their script calls here too; blocking reads stay on the pool.

The connection is opened on first use and again after it fails: every command in flight then
fails with ``redis.exceptions.ConnectionError`` (a
:class:`~genderd.transport.unavailable.RedisUnavailableError` to callers). A command with no reply
within the timeout fails with ``redis.exceptions.TimeoutError``; a watchdog (one timer per
connection, not one per command) enforces it, and a late reply is dropped. Standalone servers
only, and only the URL options in :data:`SUPPORTED_URL_OPTIONS`: anything else is refused at
start (:class:`UnsupportedURLError`) rather than silently ignored.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import time
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from genderd.errors import ConfigurationError
from genderd.lua import hash_reply
from genderd.transport.interface import Command, Transport

WATCHDOG_FRACTION = 4  # the watchdog looks this many times per timeout
SUPPORTED_URL_OPTIONS = frozenset(
    {"host", "port", "path", "db", "username", "password", "connection_class"}
)
# Replies hiredis gives flat that callers get as redis-py gives them.
_SHAPES = {b"HGETALL": hash_reply, "HGETALL": hash_reply}


class UnsupportedURLError(ConfigurationError, ValueError):
    """The Redis URL asks for something the pipelined connection does not do."""


def _error(reply: hiredis.ReplyError) -> ResponseError:
    message = str(reply)
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return ResponseError(message)


class _Protocol(asyncio.Protocol):
    """Writes queued commands, feeds replies to hiredis and resolves futures in order."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.reader = hiredis.Reader()
        # (future, deadline) per command in flight, in the order the commands were sent
        self.waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self.outgoing: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None
        self.watchdog: asyncio.TimerHandle | None = None

    # -- sending -------------------------------------------------------------------------------
    def queue(self, future: asyncio.Future[Any], packed: bytes) -> None:
        """Send a packed command. On an idle connection it is written at once (lowest latency);
        while replies are awaited, the commands queued in one turn of the event loop go out in
        one write (one system call for many concurrent lookups)."""
        loop = future.get_loop()
        self.waiting.append((future, time.monotonic() + self.timeout_s))
        if self.watchdog is None:
            self.watchdog = loop.call_later(self.timeout_s / WATCHDOG_FRACTION, self.check)
        if len(self.waiting) == 1 and self.transport is not None:
            self.transport.write(packed)
            return
        if not self.outgoing:
            loop.call_soon(self.flush)
        self.outgoing.append(packed)

    def flush(self) -> None:
        data, self.outgoing = b"".join(self.outgoing), []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def check(self) -> None:
        """Fail the commands whose deadline passed; keep them queued for their late replies."""
        self.watchdog = None
        now = time.monotonic()
        for future, deadline in self.waiting:
            if deadline > now:
                break
            if not future.done():
                future.set_exception(
                    RedisTimeoutError(f"no reply from Redis within {self.timeout_s}s")
                )
        if self.waiting and self.transport is not None:
            self.watchdog = asyncio.get_running_loop().call_later(
                self.timeout_s / WATCHDOG_FRACTION, self.check
            )

    # -- receiving ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as error:
                self.fail(RedisConnectionError(f"protocol error: {error}"))
                if self.transport is not None:
                    self.transport.close()
                return
            if reply is False:  # hiredis: no complete reply buffered yet
                return
            future, _ = self.waiting.popleft()
            if future.done():  # timed out: its reply is dropped
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(_error(reply))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"connection to Redis lost: {exc or 'closed'}"))

    def fail(self, error: Exception) -> None:
        self.lost = error
        self.outgoing = []
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)


def url_options(url: str) -> dict[str, Any]:
    """The connection options of ``url``; raise :class:`UnsupportedURLError` for any option
    this connection would otherwise ignore (redis-py's pool honours them)."""
    options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    unsupported = sorted(set(options) - SUPPORTED_URL_OPTIONS)
    if unsupported:
        raise UnsupportedURLError(
            f"the Redis URL option(s) {', '.join(unsupported)} are not supported by the "
            "pipelined connection; remove them, or set GENDERD_PIPELINED=false to use "
            "redis-py's connection pool, which supports them"
        )
    return options


class PipelinedTransport(Transport):
    """A lazily (re)connected, pipelined connection to one Redis server."""

    kind = "pipelined"

    def __init__(self, url: str, timeout_s: float) -> None:
        self.options = url_options(url)
        self.tls = url.startswith("rediss://")
        self.timeout_s = timeout_s
        self._protocol: _Protocol | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        where = self.options.get("path") or f"{self.options.get('host')}:{self.options.get('port')}"
        return f"<PipelinedTransport {where} timeout={self.timeout_s}s>"

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        options = self.options

        def make() -> _Protocol:
            return _Protocol(self.timeout_s)

        try:
            if "path" in options:
                connecting = loop.create_unix_connection(make, options["path"])
            else:
                context = ssl.create_default_context() if self.tls else None
                host, port = options.get("host", "localhost"), options.get("port", 6379)
                connecting = loop.create_connection(make, host, port, ssl=context)
            _, protocol = await asyncio.wait_for(connecting, self.timeout_s)
        except (OSError, asyncio.TimeoutError) as error:
            raise RedisConnectionError(f"cannot connect to Redis: {error}") from None
        try:
            if options.get("password"):
                auth = [options["password"]]
                if options.get("username"):
                    auth.insert(0, options["username"])
                await self._queue(protocol, ("AUTH", *auth))
            if options.get("db"):
                await self._queue(protocol, ("SELECT", options["db"]))
        except BaseException:
            if protocol.transport is not None:  # e.g. a wrong password: do not leak the socket
                protocol.transport.close()
            raise
        self._protocol = protocol
        return protocol

    async def _connected(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.lost is None:
            return protocol
        async with self._lock:
            protocol = self._protocol
            if protocol is None or protocol.lost is not None:
                protocol = await self._connect()
            return protocol

    @staticmethod
    def _queue(protocol: _Protocol, args: Command) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        protocol.queue(future, hiredis.pack_command(args))
        return future

    async def _send(self, command: Command) -> Any:
        reply = await self._queue(await self._connected(), command)
        shape = _SHAPES.get(command[0])
        return reply if shape is None else shape(reply)

    async def _send_many(self, commands: Sequence[Command]) -> list[Any]:
        protocol = await self._connected()
        futures = [self._queue(protocol, command) for command in commands]
        replies = await asyncio.gather(*futures, return_exceptions=True)
        for i, command in enumerate(commands):
            shape = _SHAPES.get(command[0])
            if shape is not None and not isinstance(replies[i], BaseException):
                replies[i] = shape(replies[i])
        return replies

    async def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
            with contextlib.suppress(Exception):
                await asyncio.sleep(0)  # let connection_lost run
