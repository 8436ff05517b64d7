"""Models written the way a data scientist would (SPEC §7), registered by the tests through
GENDERD_PLUGINS (``tests.support.pymodels:Count``), not through the package's entry points."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from genderd.events import Event
from genderd.models import PythonModel, TopWindow

#: the longest HeldStreak holds a call (its worker is killed well before)
HOLD_S = 60.0


class Count(PythonModel):
    """Counts a client's events: ``female`` after an even number, ``male`` after an odd one
    (so every event's effect shows, once)."""

    name = "count"
    description = "female after an even number of events"

    def identify_gender(self, state: dict[str, Any], event: Event) -> str | None:
        state["n"] = state.get("n", 0) + 1
        return "female" if state["n"] % 2 == 0 else "male"

    def scores(self, state: dict[str, Any]) -> dict[str, float] | None:
        return {"n": state["n"]}


class CountToo(Count):
    """The same answers as :class:`Count` under another name: a twin for the champion."""

    name = "count-too"
    description = "the same as count"


class Picky(PythonModel):
    """Fails on kids' pages, and answers a gender that is not configured for a client called
    ``odd``: both are the model's errors, dead-lettered ``model_error``."""

    name = "picky"

    def identify_gender(self, state: dict[str, Any], event: Event) -> str | None:
        if event.gender == "kids":
            raise RuntimeError("no kids\nhere")
        state.setdefault("seen", []).append(event.gender)
        return "unicorn" if event.cid == "odd" else event.gender


class Top3(TopWindow):
    name = "top3d"
    window_days = 3


class Streak(PythonModel):
    """The example of docs/write-a-model.md, verbatim."""

    name = "streak"  # consumer group, ?model= value, result fields
    description = "the department of the current streak of 3 views or more"

    def identify_gender(self, state: dict, event: Event) -> str | None:  # type: ignore[type-arg]
        if state.get("g") == event.gender:
            state["run"] += 1
        else:
            state["g"], state["run"] = event.gender, 1
        if state["run"] >= 3:
            state["answer"] = event.gender
        return state.get("answer")


class Flaky(PythonModel):
    """Counts a client's events (like :class:`Count`), but fails on the events of clients
    whose id starts with ``bad`` until a test sets ``Flaky.fixed`` (the model "fixed and
    deployed again"): its failures are its own dead letters (``model_error``)."""

    name = "flaky"
    fixed = False

    def identify_gender(self, state: dict[str, Any], event: Event) -> str | None:
        if event.cid.startswith("bad") and not type(self).fixed:
            raise RuntimeError("flaky on bad clients")
        state["n"] = state.get("n", 0) + 1
        return "female" if state["n"] % 2 == 0 else "male"

    def scores(self, state: dict[str, Any]) -> dict[str, float] | None:
        return {"n": state["n"]}


class HeldStreak(Streak):
    """:class:`Streak` (its answer depends on the order of a client's events) that holds its
    call on the event of client ``hold-me`` while the file named by ``GENDERD_TEST_HOLD``
    exists, after touching ``<that file>.held``: a test kills its worker then, with the batch
    in hand (`tests/test_grading_offline.py`)."""

    name = "held-streak"
    description = "streak, held on one client's event while a file exists"

    def identify_gender(self, state: dict, event: Event) -> str | None:  # type: ignore[type-arg]
        hold = os.environ.get("GENDERD_TEST_HOLD")
        if event.cid == "hold-me" and hold:
            held = Path(f"{hold}.held")
            held.touch()
            deadline = time.monotonic() + HOLD_S
            while Path(hold).exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        return super().identify_gender(state, event)
