"""Python models that fail in each way a model can (issue 19): registered by the tests through
GENDERD_PLUGINS. Each fails (Sleepy: holds the call until released) on the events of clients
whose id starts with ``bad`` and answers like ``Count`` otherwise."""

from __future__ import annotations

import abc
import asyncio
import sys
import threading
from typing import Any

from genderd.events import Event
from genderd.models import PythonModel

#: the longest Sleepy holds a ``bad`` client's event (seconds), unless RELEASE is set first
SLEEP_S = 30.0
#: set while Sleepy holds a call
SLEEPING = threading.Event()
#: set by a test to end Sleepy's held calls (so that what happens meanwhile is no race)
RELEASE = threading.Event()


class _Failing(PythonModel):
    def identify_gender(self, state: dict[str, Any], event: Event) -> str | None:
        if event.cid.startswith("bad"):
            self.fail()
        state["n"] = state.get("n", 0) + 1
        return "female" if state["n"] % 2 == 0 else "male"

    @abc.abstractmethod
    def fail(self) -> None:
        """How the model fails on a ``bad`` client's event (each subclass its own way)."""


class Exits(_Failing):
    name = "exits"

    def fail(self) -> None:
        sys.exit(3)


class Interrupts(_Failing):
    name = "interrupts"

    def fail(self) -> None:
        raise KeyboardInterrupt


class Cancels(_Failing):
    name = "cancels"

    def fail(self) -> None:
        raise asyncio.CancelledError()


class Closes(_Failing):
    name = "closes"

    def fail(self) -> None:
        raise GeneratorExit("closed")


class Sleepy(_Failing):
    name = "sleepy"

    def fail(self) -> None:
        SLEEPING.set()
        RELEASE.wait(SLEEP_S)
        SLEEPING.clear()
