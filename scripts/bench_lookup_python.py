"""The API process's Python work for one lookup, without I/O: the Reader's calls built and
packed (hiredis), a canned reply parsed, merged into the result hash's fields, served and
encoded (orjson). For comparing revisions: run it with each one's ``genderd`` first on
PYTHONPATH. What it leaves out (the HTTP stack, the socket, the server) is the same for all.

    python scripts/bench_lookup_python.py
    PYTHONPATH=/path/to/other/checkout python scripts/bench_lookup_python.py

Prints µs per lookup (the best of 3 repeats) for ``top``, ``top7d`` and all models, in a
deployment created with the revision's own data layout.

``--champion`` measures instead what ``GENDERD_DEFAULT_MODEL=best`` costs a lookup: the app's
whole ``GET /v1/clients/{cid}/gender`` route, called in process (ASGI, no socket) on a bundled
server filled with answers, a lookup that names no model (answered from the champion, pinned to
``--champion-model``) against one naming that model (``?model=top``), in alternating blocks:
first with the server's replies (loopback), then with the replies canned (no I/O: the route's
Python work alone, where the two differ). Prints µs per lookup of each and their ratio.

    python scripts/bench_lookup_python.py --champion

Asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import timeit
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hiredis
import orjson
import redis
from benchlib import drain_worker, machine

import genderd
from genderd.api.app import create_app
from genderd.bundled import BundledServer, find_binary, free_port
from genderd.clock import wall_clock_ms
from genderd.deployment import Deployment, open_deployment_sync
from genderd.grading import champion
from genderd.layout import LAYOUT
from genderd.models.base import Model
from genderd.producer import Producer, synthetic
from genderd.reader import Reader
from genderd.settings import Settings
from genderd.transport import connect
from genderd.transport.interface import ScriptCall

NOW = 1_795_821_183_420
#: --champion: how long the API may take to follow the pinned champion
FOLLOW_TIMEOUT_S = 30.0
TS = b"1795821183383"
#: every field a result hash of one client may hold, as this and earlier layouts write them
STORED = {
    "last": b"female",
    "last:ts": TS,
    "last:id": TS + b"-0",
    "last:at": b"1795821183418",
    "recency": b"female",
    "recency:s": b'{"female":14.9099,"male":3.5664}',
    "recency:ts": TS,
    "recency:at": b"1795821183424",
    **{
        f"{model}{field}": value
        for model, female, male in (("top", b"23", b"5"), ("top7d", b"17", b"3"))
        for field, value in (
            ("", b"female"),
            (":s", b'{"female":' + female + b',"male":' + male + b"}"),
            (":ts", TS),
            (":at", b"1795821183420"),
            (":u", b"1795852800000"),
            (":w", b"20785,7"),
            (":n:female", female),
            (":t:female", TS),
            (":n:male", male),
            (":t:male", b"1795821100000"),
        )
    },
}


def resp(values: list[bytes | None]) -> bytes:
    out = b"*%d\r\n" % len(values)
    for value in values:
        out += b"$-1\r\n" if value is None else b"$%d\r\n%s\r\n" % (len(value), value)
    return out


def per_lookup(reader: Reader, models: list[Model], number: int) -> float:
    fields = reader._answer_fields(models)
    wire = resp([STORED.get(field.decode()) for field in fields])

    def lookup() -> None:
        calls = reader._calls("C42", models, fields, NOW)
        for call in calls:
            hiredis.pack_command(call.command() if isinstance(call, ScriptCall) else call)
        parser: Any = hiredis.Reader()
        parser.feed(wire)
        reply = parser.gets()
        merged = reader._merged(calls, [reply] * len(calls), models, fields)
        orjson.dumps({model.name: model.served(merged) for model in models})

    return min(timeit.repeat(lookup, number=number, repeat=3)) / number * 1e6


class Canned:
    """A transport that answers every batch of calls with one recorded reply per call."""

    def __init__(self, reply: Any) -> None:
        self.reply = reply

    async def execute_many(self, calls: Sequence[Any]) -> list[Any]:
        return [self.reply] * len(calls)


class Route:
    """The app's lookup route called in process: one ASGI call per lookup, no socket."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.status = 0
        self.body = b""

    async def _receive(self) -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            self.body = message.get("body", b"")

    async def get(self, cid: str, query: bytes) -> None:
        path = f"/v1/clients/{cid}/gender"
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1")],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
        }
        await self.app(scope, self._receive, self._send)

    async def block(self, cids: Sequence[str], query: bytes) -> float:
        """µs per lookup over ``cids``, one after the other."""
        started = time.perf_counter()
        for cid in cids:
            await self.get(cid, query)
        return (time.perf_counter() - started) / len(cids) * 1e6


def fill(url: str, clients: int, model: str) -> None:
    """Events over ``clients`` clients, applied to ``model`` by an in-process worker; the
    champion pinned to ``model``."""
    sync = redis.Redis.from_url(url)
    deployment = open_deployment_sync(sync, Settings(redis_url=url))
    genders = deployment.settings.genders
    with Producer(sync, deployment) as producer:
        for n in range(1, clients + 1):  # every client has an answer
            producer.send_fields({"cid": f"C{n}", "gender": genders[n % len(genders)]})
        for event in synthetic(clients * 5, clients, genders, seed=1):
            producer.send_fields(event)
    sync.close()

    drain_worker(deployment, deployment.model(model))

    async def pin() -> None:
        links = connect(deployment.settings)
        try:
            await champion.pin(links, deployment, model, wall_clock_ms(), "benchmark")
        finally:
            await links.close()

    asyncio.run(pin())


async def alternate(
    route: Route, cids: list[str], named: bytes, rounds: int
) -> tuple[list[float], list[float]]:
    """µs per lookup of each round's block naming no model and naming the model, the two
    taking turns to go first."""
    unnamed_us, named_us = [], []
    for r in range(rounds):
        if r % 2 == 0:
            unnamed_us.append(await route.block(cids, b""))
            named_us.append(await route.block(cids, named))
        else:
            named_us.append(await route.block(cids, named))
            unnamed_us.append(await route.block(cids, b""))
    return unnamed_us, named_us


async def champion_lookups(url: str, args: argparse.Namespace) -> None:
    settings = Settings(redis_url=url, default_model="best")
    app = create_app(settings)
    route = Route(app)
    named = f"model={args.champion_model}".encode()
    cids = [f"C{n % args.clients + 1}" for n in range(args.block)]
    async with app.router.lifespan_context(app):
        api = app.state.api
        await api.deployment()
        deadline = time.monotonic() + FOLLOW_TIMEOUT_S
        while api.default_model.name != args.champion_model:  # the keeper follows the pin
            if time.monotonic() > deadline:
                raise SystemExit(f"the API did not follow the champion {args.champion_model}")
            await asyncio.sleep(0.05)
        await route.get(cids[0], b"")
        print(f"a lookup naming no model answers: {route.status} {route.body.decode()}")
        await alternate(route, cids, named, 2)  # warm-up
        print(
            f"\n| {args.block:,} lookups a block, {args.rounds} rounds | µs per lookup naming "
            f"no model (the champion), median / best block | µs per lookup ?{named.decode()}, "
            "median / best block | speed ratio (named time / champion time), median of the "
            "rounds (range) | speed ratio of the best blocks |"
        )
        print("|---|---:|---:|---:|---:|")
        served = await alternate(route, cids, named, args.rounds)
        print_ratio("with the server's replies (loopback)", *served)
        # the server's reply for one client, canned: every lookup then gets it without I/O
        reader = await api.reader()
        models = [api.default_model]
        calls = reader._calls(cids[0], models, reader._answer_fields(models), wall_clock_ms())
        reader.transport = Canned((await reader.transport.execute_many(calls))[0])
        print_ratio("replies canned (no I/O)", *await alternate(route, cids, named, args.rounds))


def print_ratio(label: str, unnamed: list[float], named: list[float]) -> None:
    """One row: each kind's µs per lookup (median block, best block) and the champion's
    speed relative to the named lookup's (named time / champion time): the median of the
    rounds' ratios with their range, and the ratio of the best blocks."""
    ratios = sorted(n / u for u, n in zip(unnamed, named, strict=True))
    print(
        f"| {label} | {statistics.median(unnamed):.1f} / {min(unnamed):.1f} | "
        f"{statistics.median(named):.1f} / {min(named):.1f} | "
        f"{statistics.median(ratios):.3f} ({ratios[0]:.3f}-{ratios[-1]:.3f}) | "
        f"{min(named) / min(unnamed):.3f} |"
    )


def champion_main(args: argparse.Namespace) -> None:
    with (
        tempfile.TemporaryDirectory() as data,
        BundledServer(find_binary(), free_port(), Path(data), persistent=False) as server,
    ):
        fill(server.url, args.clients, args.champion_model)
        print(
            f"genderd from {genderd.__file__}; machine: {machine()}; "
            f"server: {Path(find_binary()).name}, loopback"
        )
        asyncio.run(champion_lookups(server.url, args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=100_000, help="lookups per repeat")
    parser.add_argument(
        "--champion",
        action="store_true",
        help="instead: the lookup route with GENDERD_DEFAULT_MODEL=best, no model against named",
    )
    parser.add_argument("--champion-model", default="top", help="the champion (pinned)")
    parser.add_argument("--clients", type=int, default=2_000, help="--champion: clients")
    parser.add_argument("--block", type=int, default=300, help="--champion: lookups a block")
    parser.add_argument("--rounds", type=int, default=80, help="--champion: blocks of each")
    args = parser.parse_args()
    if args.champion:
        champion_main(args)
        return
    # as created with this revision's layout
    deployment = Deployment.build(Settings(), lambda: NOW, LAYOUT)
    reader = Reader(deployment, None)  # type: ignore[arg-type]  # sends nothing
    print(f"genderd from {genderd.__file__}")
    for label, names in (
        ("top", ["top"]),
        ("top7d", ["top7d"]),
        ("all models", [model.name for model in deployment.registry]),
    ):
        models = [deployment.model(name) for name in names]
        print(f"{label}: {per_lookup(reader, models, args.number):.2f} µs per lookup")


if __name__ == "__main__":
    main()
