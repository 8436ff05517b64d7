"""Model ``top``: the client's most visited gender of all time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from genderd.events import Event
from genderd.models.base import CountingModel, counter_fields, gender_params

if TYPE_CHECKING:
    from genderd.evaluation.predictors import TopPredictor


class TopModel(CountingModel):
    """The gender with the most events; ties go to the newest event, then the smallest name.

    The counters (``top:n:<g>``, ``top:t:<g>``: events and the newest event per gender) live
    in the client's result hash, beside the answer. Data layout 1 kept them in a hash of their
    own (:meth:`Keys.state`), which the apply script moves into the result hash when it first
    touches such a client (where the deployment may hold layout 1).
    """

    grades = True
    name = "top"
    aliases = ("model2",)
    description = "gender with the most events of all time (ties: newest event, then name)"
    apply_files = ("top.lua",)

    def params(self) -> list[str]:
        return [str(self.oldest_layout), *gender_params(self.settings)]

    def client_keys(self, shard: int, cid: str, events: Sequence[Event], now_ms: int) -> list[str]:
        result = self.keys.result(shard, cid)
        if self.oldest_layout > 1:
            return [result]
        # the second key: layout 1's counters, moved into the result hash when touched
        return [result, self.keys.state(shard, self.name, cid)]

    def client_data_keys(self, shard: int, cid: str, now_ms: int) -> list[str]:
        return [self.keys.result(shard, cid), self.keys.state(shard, self.name, cid)]

    def result_fields(self) -> Sequence[str]:
        return [*super().result_fields(), *counter_fields(self.name, self.settings)]

    def predictor(self) -> TopPredictor:
        from genderd.evaluation.predictors import TopPredictor

        return TopPredictor()
