"""Model ``top7d``: the client's most visited gender over the last 7 (``GENDERD_WINDOW_DAYS``)
UTC days, right at read time."""

from __future__ import annotations

from genderd.models.window import TopWindow


class Top7dModel(TopWindow):
    """``top7d``: the windowed top over ``GENDERD_WINDOW_DAYS`` (default 7)."""

    name = "top7d"
    aliases = ("model3",)
    description = (
        "gender with the most events in the last W (default 7) UTC days, right at read time"
    )
