"""A history written out in the format :func:`~genderd.evaluation.inputs.read_file` reads
(`genderd export`, then `genderd evaluate --events FILE` or pandas): JSON Lines
``{"cid", "gender", "ts"}``, or CSV ``cid,gender,ts`` with a header row. ``ts`` is always
written (an entry without one: its arrival time, as the workers apply it), so the file means the
same whenever it is read.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from typing import TextIO

import orjson

from genderd.evaluation.inputs import CSV_COLUMNS
from genderd.events import Event

JSON_LINES = "jsonl"
CSV = "csv"
FORMATS = (JSON_LINES, CSV)


def event_writer(out: TextIO, fmt: str) -> Callable[[Event], None]:
    """A function writing one event to ``out`` in format ``fmt`` (:data:`FORMATS`); for CSV,
    the header row is written now."""
    if fmt == CSV:
        rows = csv.writer(out, lineterminator="\n")  # quotes a cid holding a comma or a quote
        rows.writerow(CSV_COLUMNS)
        return lambda event: rows.writerow((event.cid, event.gender, event.ts))
    if fmt != JSON_LINES:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")

    def line(event: Event) -> None:
        out.write(orjson.dumps({"cid": event.cid, "gender": event.gender, "ts": event.ts}).decode())
        out.write("\n")

    return line
