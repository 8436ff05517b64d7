"""The transports: the pipelined connection (order, auth, db, unix sockets, timeouts), and what
both implementations guarantee alike (reply shapes, script loading, server states as errors)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import BusyLoadingError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from genderd.bundled import BundledServer, find_binary, free_port
from genderd.lua import Script, hash_reply
from genderd.settings import Settings
from genderd.transport import (
    PipelinedTransport,
    PoolTransport,
    RedisBusyError,
    RedisClusterDownError,
    RedisLoadingError,
    RedisOutOfMemoryError,
    RedisReadOnlyError,
    RedisUnavailableError,
    ScriptCall,
    Transport,
    UnsupportedURLError,
    connect,
    translate,
)


def test_concurrent_commands_get_their_own_replies(redis_url: str, sync_redis: redis.Redis) -> None:
    sync_redis.mset({f"k{n}": f"v{n}" for n in range(2_000)})

    async def go() -> None:
        connection = PipelinedTransport(redis_url, 2.0)
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
    server = BundledServer(
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
                connection = PipelinedTransport(url, 2.0)
                assert await connection.execute("GET", "where") == b"db2", url
                await connection.close()
            wrong = PipelinedTransport(f"redis://:wrong@127.0.0.1:{server.port}/0", 2.0)
            with pytest.raises(ResponseError):
                await wrong.execute("GET", "where")
            await wrong.close()

        asyncio.run(go())
    finally:
        server.stop()


@pytest.mark.fault
def test_timeouts_and_reconnection(tmp_path: Path) -> None:
    server = BundledServer(find_binary(), free_port(), tmp_path, persistent=True).start()
    pid = server.pid
    try:

        async def go() -> None:
            connection = PipelinedTransport(server.url, 0.3)
            await connection.execute("SET", "a", "1")
            os.kill(pid, signal.SIGSTOP)  # the server stops answering
            try:
                with pytest.raises(RedisUnavailableError, match="no reply from Redis within"):
                    await connection.execute("GET", "a")
            finally:
                os.kill(pid, signal.SIGCONT)
            # The late reply of the timed-out GET is dropped, not given to the next command.
            assert await connection.execute("SET", "b", "2") is not None
            assert await connection.execute("GET", "b") == b"2"
            server.stop()
            with pytest.raises(RedisUnavailableError, match="cannot reach Redis"):
                await connection.execute("GET", "a")
            server.start()
            assert await connection.execute("GET", "a") == b"1"  # reconnected by itself
            await connection.close()

        asyncio.run(go())
    finally:
        server.stop()


# -- what both transports guarantee -----------------------------------------------------------
ECHO_HASH = Script("echo_hash.lua", "return redis.call('HGETALL', KEYS[1])", reply=hash_reply)
SPIN = """
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
while true do
  local n = redis.call('TIME')
  if n[1] * 1000000 + n[2] - start > tonumber(ARGV[1]) then return 1 end
end
"""


def spin(url: str, micros: int) -> None:
    """Keep the server busy in a script for ``micros`` microseconds."""
    with redis.Redis.from_url(url) as client:
        client.eval(SPIN, 0, micros)


def open_transport(kind: str, url: str) -> Transport:
    if kind == "pipelined":
        return PipelinedTransport(url, 2.0)
    return PoolTransport(aioredis.Redis.from_url(url))


KINDS = ["pool", "pipelined"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_hash_is_a_dict_whichever_the_transport(
    kind: str, redis_url: str, sync_redis: redis.Redis
) -> None:
    sync_redis.hset("h", mapping={"a": "1", "b": "2"})
    want = {b"a": b"1", b"b": b"2"}

    async def go() -> None:
        transport = open_transport(kind, redis_url)
        assert await transport.execute("HGETALL", "h") == want
        assert await transport.execute("HGETALL", "nothing") == {}
        assert await transport.call(ECHO_HASH, ["h"], []) == want  # the script's reply parser
        many = await transport.execute_many(
            [("HGETALL", "h"), ScriptCall(ECHO_HASH, ["h"], []), ("HGETALL", "nothing")]
        )
        assert many == [want, want, {}]
        await transport.close()

    asyncio.run(go())


@pytest.mark.parametrize("kind", KINDS)
def test_scripts_are_loaded_again_after_the_server_lost_them(
    kind: str, redis_url: str, sync_redis: redis.Redis
) -> None:
    sync_redis.hset("h", "a", "1")

    async def go() -> None:
        transport = open_transport(kind, redis_url)
        sync_redis.script_flush()
        assert await transport.call(ECHO_HASH, ["h"], []) == {b"a": b"1"}
        assert sync_redis.script_exists(ECHO_HASH.sha) == [True]
        sync_redis.script_flush()
        # in a batch, only the script calls are sent again (the GET ran the first time)
        replies = await transport.execute_many(
            [
                ScriptCall(ECHO_HASH, ["h"], []),
                ("INCR", "counter"),
                ScriptCall(ECHO_HASH, ["h"], []),
            ]
        )
        assert replies == [{b"a": b"1"}, 1, {b"a": b"1"}]
        assert sync_redis.get("counter") == b"1"
        sync_redis.script_flush()
        await transport.load([ECHO_HASH])
        assert sync_redis.script_exists(ECHO_HASH.sha) == [True]
        await transport.close()

    asyncio.run(go())


# a script of two files (see genderd.lua): its own file after the one it uses
LOCATED_FILES = {
    "helpers.lua": "-- a helper of located.lua\nlocal function field()\n  return 'f'\nend\n",
    "located.lua": (
        "-- KEYS[1] = a key;  ARGV[1] = 'error' to fail, else the key is read as a hash\n"
        "-- uses: helpers.lua\n"
        "\n"
        "if ARGV[1] == 'error' then error('boom') end\n"  # line 4
        "return redis.call('HGET', KEYS[1], field())\n"  # line 5
    ),
}
LOCATED = Script.from_files("located.lua", read=lambda _package, name: LOCATED_FILES[name])


@pytest.mark.parametrize("kind", KINDS)
def test_a_script_error_names_the_file_and_line_it_comes_from(
    kind: str, redis_url: str, sync_redis: redis.Redis
) -> None:
    sync_redis.set("s", "x")  # not a hash
    assert LOCATED.source.splitlines()[7] == "if ARGV[1] == 'error' then error('boom') end"

    async def go() -> None:
        transport = open_transport(kind, redis_url)
        sync_redis.script_flush()  # the first call loads the script and runs it again
        boom = r"^(ERR )?located\.lua:4: boom .*@located\.lua:4\.$"  # pipelined keeps ERR
        with pytest.raises(ResponseError, match=boom):
            await transport.call(LOCATED, ["s"], ["error"])
        with pytest.raises(ResponseError, match=r"^WRONGTYPE .*@located\.lua:5\.$") as wrong:
            await transport.call(LOCATED, ["s"], ["read"])
        assert "user_script" not in str(wrong.value)
        assert "user_script:9" in str(wrong.value.__cause__)  # the server's own words
        with pytest.raises(ResponseError, match=r"^(ERR )?located\.lua:4: boom"):
            await transport.execute_many([("GET", "s"), ScriptCall(LOCATED, ["s"], ["error"])])
        assert await transport.call(LOCATED, ["h"], ["read"]) is None  # and it works
        await transport.close()

    asyncio.run(go())


@pytest.mark.parametrize("kind", KINDS)
def test_server_states_are_genderd_errors(
    kind: str, redis_url: str, sync_redis: redis.Redis
) -> None:
    async def go() -> None:
        transport = open_transport(kind, redis_url)
        with pytest.raises(ResponseError, match="WRONGTYPE") as wrong:
            sync_redis.set("s", "x")
            await transport.execute("HGETALL", "s")
        assert not isinstance(wrong.value, RedisUnavailableError)  # a real error stays one

        sync_redis.config_set("maxmemory", "1")
        try:
            with pytest.raises(RedisOutOfMemoryError):
                await transport.execute("SET", "k", "v")
            assert await transport.execute("GET", "s") == b"x"  # reads still work
        finally:
            sync_redis.config_set("maxmemory", "0")

        sync_redis.config_set("busy-reply-threshold", "50")
        spinner = threading.Thread(
            target=lambda: redis.Redis.from_url(redis_url).eval(SPIN, 0, 1_500_000)
        )
        spinner.start()
        try:
            await asyncio.sleep(0.4)  # the script is past its 50 ms: the server answers BUSY
            with pytest.raises(RedisBusyError):
                await transport.ping()
        finally:
            spinner.join()
            sync_redis.config_set("busy-reply-threshold", "5000")
        await transport.ping()
        await transport.close()

    asyncio.run(go())


@pytest.mark.slow
def test_a_read_replica_refuses_writes_as_read_only(
    tmp_path: Path, redis_server: BundledServer
) -> None:
    replica = BundledServer(find_binary(), free_port(), tmp_path, persistent=False).start()
    try:
        redis.Redis(port=replica.port).replicaof("127.0.0.1", redis_server.port)

        async def go() -> None:
            for kind in KINDS:
                transport = open_transport(kind, replica.url)
                with pytest.raises(RedisReadOnlyError):
                    await transport.execute("SET", "k", "v")
                await transport.close()

        asyncio.run(go())
    finally:
        replica.stop()


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (ResponseError("LOADING Redis is loading the dataset in memory"), RedisLoadingError),
        (BusyLoadingError("Redis is loading the dataset in memory"), RedisLoadingError),
        (
            ResponseError("READONLY You can't write against a read only replica."),
            RedisReadOnlyError,
        ),
        (
            ResponseError("OOM command not allowed when used memory > 'maxmemory'."),
            RedisOutOfMemoryError,
        ),
        (ResponseError("BUSY Redis is busy running a script."), RedisBusyError),
        (ResponseError("MASTERDOWN Link with MASTER is down"), RedisClusterDownError),
        (ResponseError("CLUSTERDOWN The cluster is down"), RedisClusterDownError),
        (ResponseError("TRYAGAIN Multiple keys request during rehashing"), RedisClusterDownError),
        (RedisConnectionError("Connection refused"), RedisUnavailableError),
        (RedisTimeoutError("Timeout reading from socket"), RedisUnavailableError),
        (ConnectionResetError("reset by peer"), RedisUnavailableError),
    ],
)
def test_not_now_states_map_to_their_error(raised: Exception, expected: type) -> None:
    translated = translate(raised)
    assert type(translated) is expected
    assert str(raised) in str(translated)


@pytest.mark.parametrize(
    "raised",
    [
        ResponseError("BUSYGROUP Consumer Group name already exists"),
        ResponseError("WRONGTYPE x"),
        ValueError("x"),
    ],
)
def test_other_errors_stay_what_they_are(raised: Exception) -> None:
    assert translate(raised) is raised


def test_the_pipelined_connection_refuses_url_options_it_would_ignore(redis_url: str) -> None:
    for url in (
        f"{redis_url}?protocol=3",
        "rediss://127.0.0.1:6390/0?ssl_cert_reqs=none",
        f"{redis_url}?client_name=x",
    ):
        with pytest.raises(UnsupportedURLError, match="GENDERD_PIPELINED=false"):
            PipelinedTransport(url, 1.0)
    # with the pool only, the same URL is taken as redis-py takes it
    links = connect(Settings(redis_url=f"{redis_url}?client_name=genderd", pipelined=False))

    async def go() -> None:
        assert links.fast is links.pool
        await links.fast.ping()
        assert await links.client.client_getname() in ("genderd", b"genderd")
        await links.close()

    asyncio.run(go())
