"""Model ``first``: the department of a shopper's first visit, the event with the least
(``ts``, entry id). Its apply script is ``first.lua``, beside this file (package data)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from genderd.events import Event
from genderd.keys import result_field
from genderd.models import Model
from genderd.streams import parse_id


class FirstPredictor:
    """``first`` in Python, for ``genderd evaluate``: the gender of the event with the least
    (ts, entry id) applied so far, whatever the order they come in (``--order time`` or
    ``arrival``); state: ``[(ts, id) of that event, its gender]``."""

    def new(self) -> list[Any]:
        return [None, None]

    def predict(self, state: list[Any], t: int) -> tuple[str | None, None]:
        return state[1], None  # (None, None): no answer yet (the service answers 404)

    def apply(self, state: list[Any], event: Event) -> None:
        key = (event.ts, parse_id(event.id))
        if state[0] is None or key < state[0]:
            state[0], state[1] = key, event.gender


class First(Model):
    """The gender of the client's first event (least ts, then entry id)."""

    name = "first"
    description = "gender of the client's first visit (least ts, then entry id)"
    script_package = "genderd_first"  # where apply_files are found (package data)
    apply_files = ("first.lua",)
    grades = True  # first.lua fills the frame's predictions: it is graded live

    def client_keys(self, shard: int, cid: str, events: Sequence[Event], now_ms: int) -> list[str]:
        # KEYS of one client, in the order of first.lua's contract: its result hash
        return [self.keys.result(shard, cid)]

    def result_fields(self) -> Sequence[str]:
        # every field the script writes, so that `genderd replay --model first` removes them
        return [*super().result_fields(), *(result_field(self.name, p) for p in ("ft", "fid"))]

    def predictor(self) -> FirstPredictor:
        return FirstPredictor()
