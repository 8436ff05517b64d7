"""The API process's Python work for one lookup, without I/O: the Reader's calls built and
packed (hiredis), a canned reply parsed, merged into the result hash's fields, served and
encoded (orjson). For comparing revisions: run it with each one's ``genderd`` first on
PYTHONPATH. What it leaves out (the HTTP stack, the socket, the server) is the same for all.

    python scripts/bench_lookup_python.py
    PYTHONPATH=/path/to/other/checkout python scripts/bench_lookup_python.py

Prints µs per lookup (the best of 3 repeats) for ``top``, ``top7d`` and all models, in a
deployment created with the revision's own data layout. Asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import timeit
from typing import Any

import hiredis
import orjson

import genderd
from genderd.deployment import Deployment
from genderd.layout import LAYOUT
from genderd.models.base import Model
from genderd.reader import Reader
from genderd.settings import Settings
from genderd.transport.interface import ScriptCall

NOW = 1_795_821_183_420
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=100_000, help="lookups per repeat")
    args = parser.parse_args()
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
