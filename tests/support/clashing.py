"""Models whose authors picked, for their own helpers, every public name the framework's model
has (tests/test_model_namespace.py): the user's class is the user's namespace."""

from __future__ import annotations

from collections import Counter
from typing import Any

from genderd.events import Event
from genderd.keys import Keys
from genderd.models import PythonModel, TopWindow
from genderd.models.python import PythonRuntime
from genderd.models.window import WindowRuntime
from genderd.settings import Settings

#: what a user writes on purpose: the contract (SPEC §7)
CONTRACT = {"name", "aliases", "description", "identify_gender", "scores", "window_days"}


class _Probe(PythonModel):
    name = "probe"

    def identify_gender(self, state: dict[str, Any], event: Event) -> str | None:
        return None


class _ProbeWindow(TopWindow):
    name = "probewindow"


def framework_names() -> set[str]:
    """Every public name of the framework's models of both user kinds, class and instance."""
    settings, keys = Settings(redis_url="redis://unused.invalid"), Keys("genderd")
    runtimes = [PythonRuntime(_Probe, settings, keys), WindowRuntime(_ProbeWindow, settings, keys)]
    found = {n for runtime in runtimes for n in (*dir(runtime), *vars(runtime))}
    return {n for n in found if not n.startswith("_")} - CONTRACT


def _trap(attribute: str) -> Any:
    def helper(self: object, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"the framework called the model's own helper {attribute!r}")

    return helper


NAMES = framework_names()


class Clash(PythonModel):
    """The gender of the client's event with the greatest (ts, id); scores: events per gender.
    Its helpers ``run`` and ``keys`` are its own; every other framework name is a trap."""

    name = "clash"
    aliases = ("clash2",)
    description = "helpers named like the framework's"

    def run(self, state: dict[str, Any], event: Event) -> None:  # the user's helper
        newest = state.get("newest")
        if newest is None or (event.ts, event.id) > (newest[0], newest[1]):
            state["newest"] = [event.ts, event.id, event.gender]
        state.setdefault("n", {})[event.gender] = self.keys(state).get(event.gender, 0) + 1

    def keys(self, state: dict[str, Any]) -> dict[str, int]:  # the user's helper
        counts: dict[str, int] = state.get("n", {})
        return counts

    def identify_gender(self, state: dict[str, Any], event: Event) -> str | None:
        self.run(state, event)
        gender: str = state["newest"][2]
        return gender

    def scores(self, state: dict[str, Any]) -> dict[str, float] | None:
        return dict(Counter(self.keys(state)))


class ClashWindow(TopWindow):
    """The windowed top over 3 days, with every framework name a trap."""

    name = "clashwindow"
    window_days = 3


for _name in NAMES:
    if _name not in ("run", "keys"):
        setattr(Clash, _name, _trap(_name))
    setattr(ClashWindow, _name, _trap(_name))
