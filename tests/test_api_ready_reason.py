"""``/readyz`` tells the error behind a 503, which can name the Redis server's address, only to
a caller that may read (issue 27, finding 12): with a read token set, a caller without it gets
the server's state in words; with the token, or when reads are open, the error itself."""

from __future__ import annotations

from genderd.bundled import free_port

from .support.api_helpers import MakeApi

READ = {"Authorization": "Bearer r3ad"}
TOKENS = {"read_token": "r3ad", "api_token": "1ngest"}


def test_readyz_names_the_redis_address_only_to_a_reader(make_api: MakeApi) -> None:
    port = free_port()  # nothing listens there: "Error 111 connecting to 127.0.0.1:<port>"
    api = make_api(redis_url=f"redis://127.0.0.1:{port}/0", **TOKENS)

    anyone = api.get("/readyz")
    assert anyone.status_code == 503 and anyone.headers["retry-after"]
    body = anyone.json()
    assert body["status"] == "unavailable"
    assert body["detail"] == "Redis is unavailable; retry shortly"
    assert str(port) not in anyone.text and "127.0.0.1" not in anyone.text
    assert body["reason"] == "Redis is unavailable (the error itself with the read token)"
    wrong = api.get("/readyz", headers={"Authorization": "Bearer nope"})
    assert str(port) not in wrong.text

    reader = api.get("/readyz", headers=READ)
    assert reader.status_code == 503
    assert f"127.0.0.1:{port}" in reader.json()["reason"]

    open_reads = make_api(redis_url=f"redis://127.0.0.1:{port}/0")
    assert f"127.0.0.1:{port}" in open_reads.get("/readyz").json()["reason"]
