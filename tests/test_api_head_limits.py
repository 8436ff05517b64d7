"""`genderd serve` bounds the request head (issue 21): a request whose headers pass 64 KiB, or
that has more than 100 of them, is answered 431 and its connection closed before the rest is
read, so that no request makes the API hold what a client sends. The server runs as a
subprocess on a free loopback port and is stopped by pid."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from genderd.api.protocol import MAX_HEAD_BYTES, MAX_HEADERS
from genderd.bundled import free_port

START_TIMEOUT_S = 60.0


def exchange(port: int, head: bytes, chunk: int = 64 * 1024) -> bytes:
    """Send ``head`` (stopping when the server closes) and read the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        try:
            for start in range(0, len(head), chunk):
                connection.sendall(head[start : start + chunk])
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the end: what the answer says
        answer = b""
        try:
            while part := connection.recv(65536):
                answer += part
        except ConnectionResetError:
            pass
        return answer


def request(*headers: bytes) -> bytes:
    return (
        b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n" + b"".join(headers) + b"\r\n"
    )


@pytest.fixture
def port(redis_url: str) -> Iterator[int]:
    chosen = free_port()
    env = dict(os.environ, GENDERD_REDIS_URL=redis_url)
    process = subprocess.Popen(
        [sys.executable, "-m", "genderd", "serve", "--port", str(chosen)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _serving(chosen):
            assert process.poll() is None, "serve exited"
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)
        yield chosen
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            psutil.Process(process.pid).kill()


def _serving(port: int) -> bool:
    try:
        return exchange(port, request()).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def test_a_head_within_the_limits_is_served(port: int) -> None:
    fifty = [b"x-h%d: %s\r\n" % (n, b"v" * 500) for n in range(50)]
    assert exchange(port, request(*fifty)).startswith(b"HTTP/1.1 200")


def test_a_1_mib_header_is_431_and_the_connection_closed(port: int) -> None:
    answer = exchange(port, request(b"x-big: " + b"a" * (1024 * 1024) + b"\r\n"))
    assert answer.startswith(b"HTTP/1.1 431")
    assert f"at most {MAX_HEAD_BYTES} bytes".encode() in answer
    # and the server is fine afterwards
    assert exchange(port, request()).startswith(b"HTTP/1.1 200")


def test_too_many_headers_is_431(port: int) -> None:
    many = [b"x-h%d: v\r\n" % n for n in range(MAX_HEADERS + 1)]
    answer = exchange(port, request(*many))
    assert answer.startswith(b"HTTP/1.1 431")
    assert b"400" not in answer.split(b"\r\n", 1)[0]
    assert exchange(port, request()).startswith(b"HTTP/1.1 200")
