"""Model classes that cannot be loaded, for the loading tests (issue 27, findings 11 and 18):
registered through GENDERD_PLUGINS or injected as installed entry points."""

from __future__ import annotations

from typing import Any

from genderd.events import Event
from genderd.models import PythonModel, TopWindow
from genderd.models.last import LastModel


class Shout(PythonModel):
    """A name with capitals: lookups match names lowercased, so nothing could ask for it."""

    name = "Shout"

    def identify_gender(self, state: dict[str, Any], event: Event) -> str | None:
        return event.gender


class Spaced(PythonModel):
    """A valid name with an alias that is not one."""

    name = "spaced"
    aliases = ("two words",)

    def identify_gender(self, state: dict[str, Any], event: Event) -> str | None:
        return event.gender


class NoLua(LastModel):
    """A Lua-backed model whose package lacks its Lua file (an installed plug-in package
    that lost it)."""

    name = "nolua"
    aliases = ()
    apply_files = ("absent.lua",)


class Widened(TopWindow):
    """A window of 30 days, widened past the bound after the class was made."""

    name = "widened"
    window_days = 30


Widened.window_days = 200_000


class Raising(PythonModel):
    """A model whose ``__init__`` fails (its configuration is missing)."""

    name = "raising"

    def __init__(self) -> None:
        raise RuntimeError("no config")

    def identify_gender(self, state: dict[str, Any], event: Event) -> str | None:
        return event.gender
