"""Configuration mistakes are refused when the settings are built, before any key is touched."""

from __future__ import annotations

import socket

import pytest
from pydantic import ValidationError

from genderd.bundled import port_is_free
from genderd.keys import Keys, glob_escape
from genderd.settings import Settings


@pytest.mark.parametrize("prefix", ["g*", "a?", "x[1]", "a\\b", "t{a}g", "co:lon", "sp ace", ""])
def test_prefixes_outside_the_safe_characters_are_refused(prefix: str) -> None:
    with pytest.raises(ValidationError):
        Settings(prefix=prefix)


def test_safe_prefixes_are_taken() -> None:
    for prefix in ("genderd", "shop-eu.v2", "A_1"):
        assert Settings(prefix=prefix).prefix == prefix


def test_scan_patterns_match_only_their_own_prefix_even_with_glob_characters() -> None:
    # Settings refuse such prefixes; the patterns are escaped anyway (belt and braces).
    keys = Keys("g*")
    assert keys.model_pattern(0, "top") == "g\\*:{s0}:m:top:*"
    assert keys.result_pattern(3) == "g\\*:{s3}:r:*"
    assert glob_escape("a?b[c]\\") == "a\\?b\\[c\\]\\\\"


@pytest.mark.parametrize("url", ["localhost:6390", "127.0.0.1:6379/0", "http://x:1", "redis:/x"])
def test_urls_without_a_redis_scheme_are_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="must start with"):
        Settings(redis_url=url)


@pytest.mark.parametrize("field", ["api_token", "read_token"])
@pytest.mark.parametrize("value", ["", "   "])
def test_a_token_that_is_set_but_empty_is_refused(field: str, value: str) -> None:
    with pytest.raises(ValidationError, match="must not be empty"):
        Settings(**{field: value})


def test_a_port_left_in_time_wait_is_free() -> None:
    """After Ctrl-C the API's port holds connections in TIME-WAIT; a server binds it fine."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server side closes first: its end goes to TIME-WAIT
        client.recv(1)
        client.close()
    assert port_is_free(port)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert not port_is_free(taken.getsockname()[1])
