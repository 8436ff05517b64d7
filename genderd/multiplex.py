"""One pipelined Redis connection shared by every concurrent lookup (or Lua call) of a process.

A lookup is a single command. Through redis-py's pool each one pays a pool checkout, Python
command packing, its own socket write and a connection release; here concurrent requests queue
their commands (packed by hiredis) on one connection, the commands queued in one turn of the
event loop leave in one write, and the replies, which Redis returns in order, resolve their
futures first-in first-out (parsed by hiredis). Redis runs commands one at a time anyway, so
one connection loses no server throughput, and a lookup costs the API a few microseconds.
Slow or rare calls (status, ingest) keep using redis-py's pool. Workers send their Lua calls
here too (their blocking stream reads stay on the pool: they would hold up the connection).

The connection is opened on first use and again after it fails: every command in flight then
fails with ``redis.exceptions.ConnectionError``, which the API turns into a 503. A command with
no reply within the timeout fails with ``redis.exceptions.TimeoutError``; a watchdog (one timer
per connection, not one per command) enforces it, and a late reply is dropped. Redis Cluster is
not supported here (the API uses redis-py's cluster client there).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import time
from typing import Any, cast

import hiredis
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

WATCHDOG_FRACTION = 4  # the watchdog looks this many times per timeout


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


class MultiplexedConnection:
    """A lazily (re)connected, pipelined connection to one Redis server."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        self.tls = url.startswith("rediss://")
        self.timeout_s = timeout_s
        self._protocol: _Protocol | None = None
        self._lock = asyncio.Lock()

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
                await self._send(protocol, ("AUTH", *auth))
            if options.get("db"):
                await self._send(protocol, ("SELECT", options["db"]))
        except BaseException:
            if protocol.transport is not None:  # e.g. a wrong password: do not leak the socket
                protocol.transport.close()
            raise
        self._protocol = protocol
        return protocol

    async def _reconnect(self) -> _Protocol:
        async with self._lock:
            protocol = self._protocol
            if protocol is None or protocol.lost is not None:
                protocol = await self._connect()
            return protocol

    def _send(self, protocol: _Protocol, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        protocol.queue(future, hiredis.pack_command(args))
        return future

    async def execute(self, *args: Any) -> Any:
        """Send one command and return its reply (hiredis types: bytes, lists, ints)."""
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._reconnect()
        return await self._send(protocol, args)

    async def execute_many(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send commands in one write (one round trip) and return their replies in order;
        the first error reply is raised after all replies are in."""
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._reconnect()
        futures = [self._send(protocol, command) for command in commands]
        replies = await asyncio.gather(*futures, return_exceptions=True)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
            with contextlib.suppress(Exception):
                await asyncio.sleep(0)  # let connection_lost run
