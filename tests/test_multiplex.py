"""The pipelined connection of the API's lookups: order, auth, db, unix sockets, timeouts."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from genderd.multiplex import MultiplexedConnection
from genderd.server import Server, find_binary, free_port


def test_concurrent_commands_get_their_own_replies(redis_url: str, sync_redis: redis.Redis) -> None:
    sync_redis.mset({f"k{n}": f"v{n}" for n in range(2_000)})

    async def go() -> None:
        connection = MultiplexedConnection(redis_url, 2.0)
        replies = await asyncio.gather(*(connection.execute("GET", f"k{n}") for n in range(2_000)))
        assert replies == [f"v{n}".encode() for n in range(2_000)]
        assert await connection.execute_many([("GET", "k1"), ("GET", "nope"), ("GET", "k2")]) == [
            b"v1",
            None,
            b"v2",
        ]
        with pytest.raises(NoScriptError):
            await connection.execute("EVALSHA", "0" * 40, 0)
        with pytest.raises(ResponseError):
            await connection.execute("INCR", "k1")  # not an integer: an error reply
        assert await connection.execute("GET", "k3") == b"v3"  # still in step after errors
        await connection.close()

    asyncio.run(go())


def test_password_db_and_unix_socket(tmp_path: Path) -> None:
    socket_path = tmp_path / "r.sock"
    server = Server(
        find_binary(),
        free_port(),
        tmp_path,
        persistent=False,
        extra_args=[
            "--requirepass",
            "s3cret",
            "--unixsocket",
            str(socket_path),
            "--unixsocketperm",
            "700",
        ],
    ).start()
    try:
        admin = redis.Redis(port=server.port, password="s3cret", db=2)
        admin.set("where", "db2")
        admin.close()

        async def go() -> None:
            for url in (
                f"redis://:s3cret@127.0.0.1:{server.port}/2",
                f"unix://:s3cret@{socket_path}?db=2",
            ):
                connection = MultiplexedConnection(url, 2.0)
                assert await connection.execute("GET", "where") == b"db2", url
                await connection.close()
            wrong = MultiplexedConnection(f"redis://:wrong@127.0.0.1:{server.port}/0", 2.0)
            with pytest.raises(ResponseError):
                await wrong.execute("GET", "where")
            await wrong.close()

        asyncio.run(go())
    finally:
        server.stop()


@pytest.mark.fault
def test_timeouts_and_reconnection(tmp_path: Path) -> None:
    server = Server(find_binary(), free_port(), tmp_path, persistent=True).start()
    pid = server.pid
    try:

        async def go() -> None:
            connection = MultiplexedConnection(server.url, 0.3)
            await connection.execute("SET", "a", "1")
            os.kill(pid, signal.SIGSTOP)  # the server stops answering
            try:
                with pytest.raises(RedisTimeoutError):
                    await connection.execute("GET", "a")
            finally:
                os.kill(pid, signal.SIGCONT)
            # The late reply of the timed-out GET is dropped, not given to the next command.
            assert await connection.execute("SET", "b", "2") is not None
            assert await connection.execute("GET", "b") == b"2"
            server.stop()
            with pytest.raises(RedisConnectionError):
                await connection.execute("GET", "a")
            server.start()
            assert await connection.execute("GET", "a") == b"1"  # reconnected by itself
            await connection.close()

        asyncio.run(go())
    finally:
        server.stop()
