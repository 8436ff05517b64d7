"""One pipelined Redis connection shared by every concurrent lookup of a process.

A lookup is a single command. Through redis-py's pool each one pays a pool checkout, Python
command packing and a connection release; here concurrent requests write their commands on one
connection (packed by hiredis) and replies, which Redis returns in order, resolve their futures
first-in first-out (parsed by hiredis). Redis runs commands one at a time anyway, so one
connection loses no server throughput, and the API's hot path costs a few microseconds of
Python. Slow or rare calls (status, ingest) keep using the pool.

The connection is opened on first use and again after it fails: every command in flight then
fails with ``redis.exceptions.ConnectionError``, which the API turns into a 503. A command that
times out fails with ``redis.exceptions.TimeoutError``; its reply, when it comes, is dropped.
Redis Cluster is not supported here (the API falls back to the pool there).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from typing import Any, cast

import hiredis
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


def _error(reply: hiredis.ReplyError) -> ResponseError:
    message = str(reply)
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return ResponseError(message)


def _expire(future: asyncio.Future[Any], timeout_s: float) -> None:
    if not future.done():
        future.set_exception(RedisTimeoutError(f"no reply from Redis within {timeout_s}s"))


class _Protocol(asyncio.Protocol):
    """Feeds what the socket receives to hiredis and resolves waiting futures in order."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None
        self.outgoing: list[bytes] = []

    def queue(self, future: asyncio.Future[Any], packed: bytes) -> None:
        """Send a packed command. On an idle connection it is written at once (lowest latency);
        while replies are awaited, commands queued in one turn of the event loop go out in one
        write (one system call for many concurrent lookups)."""
        self.waiting.append(future)
        if len(self.waiting) == 1 and self.transport is not None:
            self.transport.write(packed)
            return
        if not self.outgoing:
            asyncio.get_running_loop().call_soon(self.flush)
        self.outgoing.append(packed)

    def flush(self) -> None:
        data, self.outgoing = b"".join(self.outgoing), []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as error:
                self._fail(RedisConnectionError(f"protocol error: {error}"))
                if self.transport is not None:
                    self.transport.close()
                return
            if reply is False:  # hiredis: no complete reply buffered yet
                return
            future = self.waiting.popleft()
            if future.done():  # timed out or cancelled: its reply is dropped
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(_error(reply))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"connection to Redis lost: {exc or 'closed'}"))

    def _fail(self, error: Exception) -> None:
        self.lost = error
        while self.waiting:
            future = self.waiting.popleft()
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
        try:
            if "path" in options:
                _, protocol = await asyncio.wait_for(
                    loop.create_unix_connection(_Protocol, options["path"]), self.timeout_s
                )
            else:
                context = ssl.create_default_context() if self.tls else None
                _, protocol = await asyncio.wait_for(
                    loop.create_connection(
                        _Protocol,
                        options.get("host", "localhost"),
                        options.get("port", 6379),
                        ssl=context,
                    ),
                    self.timeout_s,
                )
        except (OSError, asyncio.TimeoutError) as error:
            raise RedisConnectionError(f"cannot connect to Redis: {error}") from None
        self._protocol = protocol
        if options.get("password"):
            auth = (
                [options["username"], options["password"]]
                if options.get("username")
                else [options["password"]]
            )
            await self._send(protocol, ("AUTH", *auth))
        if options.get("db"):
            await self._send(protocol, ("SELECT", options["db"]))
        return protocol

    async def _ready(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.lost is None:
            return protocol
        async with self._lock:
            protocol = self._protocol
            if protocol is None or protocol.lost is not None:
                protocol = await self._connect()
            return protocol

    async def _send(self, protocol: _Protocol, args: tuple[Any, ...]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        protocol.queue(future, hiredis.pack_command(args))
        # A timer instead of asyncio.wait_for: no extra task per command on the hot path.
        timer = loop.call_later(self.timeout_s, _expire, future, self.timeout_s)
        try:
            return await future
        finally:
            timer.cancel()

    async def execute(self, *args: Any) -> Any:
        """Send one command and return its reply (hiredis types: bytes, lists, ints)."""
        return await self._send(await self._ready(), args)

    async def execute_many(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send commands in one write (one round trip) and return their replies in order;
        the first error reply is raised after all replies are in."""
        protocol = await self._ready()
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in commands]
        for future, command in zip(futures, commands, strict=True):
            protocol.queue(future, hiredis.pack_command(command))
        try:
            done = await asyncio.wait_for(
                asyncio.gather(*futures, return_exceptions=True), self.timeout_s
            )
        except asyncio.TimeoutError:
            raise RedisTimeoutError(f"no reply from Redis within {self.timeout_s}s") from None
        for reply in done:
            if isinstance(reply, Exception):
                raise reply
        return done

    async def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
            with contextlib.suppress(Exception):
                await asyncio.sleep(0)  # let connection_lost run
