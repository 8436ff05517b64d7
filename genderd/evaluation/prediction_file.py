"""Every scored event's predictions, written out for pandas (``genderd evaluate --predictions``).

One row per scored event and row of the report (the baseline included), in the order the
events were applied: ``entry_id, cid, ts, gender, model, prediction, correct,
earlier_events`` (``prediction`` empty, ``correct`` false, where the model had no answer;
``earlier_events``: the client's events applied before this one). CSV (``.csv``, with a header
row) or JSON Lines (``.jsonl`` or ``.json``), told by the file's extension. Rows are written as
the evaluation runs (memory does not grow with them), into ``FILE.partial``, which becomes
``FILE`` only when the evaluation succeeds::

    import pandas as pd
    rows = pd.read_csv("predictions.csv")
    rows.pivot_table(index="earlier_events", columns="model", values="correct")
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from genderd.errors import InputError
from genderd.evaluation.scoring import Step

COLUMNS = (
    "entry_id",
    "cid",
    "ts",
    "gender",
    "model",
    "prediction",
    "correct",
    "earlier_events",
)
CSV, JSON_LINES = "csv", "jsonl"
#: file extension -> format
FORMATS = {".csv": CSV, ".jsonl": JSON_LINES, ".json": JSON_LINES}
PARTIAL = ".partial"  # the suffix of the file while it is written
WRITE_BUFFER = 1 << 20  # bytes buffered before a write


def format_of(path: str) -> str:
    """The format the extension of ``path`` names, or an InputError in one line."""
    found = FORMATS.get(Path(path).suffix.lower())
    if found is None:
        raise InputError(
            f"--predictions {path}: the file name must end with .csv, .jsonl or .json (the format)"
        )
    return found


class PredictionWriter:
    """Writes the rows of the steps that pass through :meth:`through` (an
    :class:`~genderd.evaluation.prequential.Evaluation`'s sink)."""

    def __init__(self, stream: IO[str], kind: str) -> None:
        self._stream = stream
        self._csv = csv.writer(stream, lineterminator="\n") if kind == CSV else None
        if self._csv is not None:
            self._csv.writerow(COLUMNS)
        self.rows = 0

    def through(self, names: Sequence[str], steps: Iterable[Step]) -> Iterator[Step]:
        """Each of ``steps``, its rows written first (``names``: the report's rows)."""
        write = self._write
        for step in steps:
            event, history, answers = step
            for name, (gender, _) in zip(names, answers, strict=True):
                write(
                    (
                        event.id,
                        event.cid,
                        event.ts,
                        event.gender,
                        name,
                        gender,
                        gender == event.gender,
                        history,
                    )
                )
            yield step

    def _write(self, row: tuple[Any, ...]) -> None:
        self.rows += 1
        if self._csv is not None:
            self._csv.writerow(row)  # None: an empty cell
            return
        self._stream.write(orjson.dumps(dict(zip(COLUMNS, row, strict=True))).decode())
        self._stream.write("\n")


@contextlib.contextmanager
def prediction_file(path: str) -> Iterator[PredictionWriter]:
    """A writer of the rows into ``path + ".partial"``, renamed ``path`` when the block ends
    without an error and removed when it raises."""
    kind = format_of(path)
    partial = path + PARTIAL
    try:
        stream = open(partial, "w", encoding="utf-8", newline="", buffering=WRITE_BUFFER)
    except OSError as error:
        raise InputError(f"cannot write {partial}: {error.strerror or error}") from None
    try:
        with stream:
            yield PredictionWriter(stream, kind)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(partial)
        raise
    os.replace(partial, path)


__all__ = ["COLUMNS", "FORMATS", "PredictionWriter", "format_of", "prediction_file"]
