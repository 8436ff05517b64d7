"""The Lua-backed plug-in of docs/lua-models.md, verbatim: ``first``, the department of the
client's first page view (its event with the least ``(ts, entry id)``), with its Lua script
(tests/support/first.lua) and the Python reference the evaluation replays (``predictor``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from genderd.evaluation import Order
from genderd.evaluation.predictors import Prediction
from genderd.events import Event
from genderd.keys import result_field
from genderd.models import Model
from genderd.streams import parse_id


class FirstPredictor:
    """What first.lua stores: the gender of the event with the least (ts, entry id).

    State: [gender, (ts, id as numbers)]. The comparison makes it right in both orders: in
    time order the first event applied is the answer for good, but in arrival order a late
    event can be earlier than the one stored."""

    def new(self) -> list[Any]:
        return [None, None]

    def predict(self, state: list[Any], t: int, now: int) -> Prediction:
        return state[0], None  # no scores: the answer only

    def apply(self, state: list[Any], event: Event) -> None:
        key = (event.ts, parse_id(event.id))
        if state[1] is None or key < state[1]:
            state[0], state[1] = event.gender, key


class First(Model):
    name = "first"
    description = "the department of the client's first page view"
    apply_files = ("first.lua",)
    script_package = "tests.support"  # the package holding first.lua

    def client_keys(self, shard: int, cid: str, events: Sequence[Event], now_ms: int) -> list[str]:
        return [self.keys.result(shard, cid)]

    def result_fields(self) -> Sequence[str]:
        return [*super().result_fields(), result_field(self.name, "id")]

    def predictor(self, order: Order = "time") -> FirstPredictor:
        return FirstPredictor()  # the same reference in both orders
