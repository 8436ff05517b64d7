"""The model plug-in contract.

A model is one class: its name and aliases, a description, the Lua script that applies a batch
of one shard's entries (effects and XACK in one call), the keys each entry needs, and how its
answer is read back from the client's result hash. Models register under the
``genderd.models`` entry-point group; see :mod:`genderd.models.registry`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from genderd.events import Event
from genderd.keys import Keys, result_field
from genderd.scripts import LIB, Script
from genderd.settings import Settings

ResultHash = Mapping[bytes, bytes]


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ is slow
class Answer:
    """A model's answer for one client, for Python callers (the API serves
    :meth:`Model.served`, built from the same fields).

    ``scores_json`` is the stored JSON object of per-gender counts (None: the model does not
    count, e.g. ``last``).
    """

    model: str
    gender: str
    scores_json: bytes | None
    last_event_ts: int
    as_of: int

    @property
    def scores(self) -> dict[str, int] | None:
        """The per-gender counts behind the answer (None: not counted)."""
        return orjson.loads(self.scores_json) if self.scores_json else None

    def to_dict(self) -> dict[str, Any]:
        """The answer's fields as the API serves them (SPEC §5), scores parsed."""
        return {
            "gender": self.gender,
            "scores": self.scores,
            "last_event_ts": self.last_event_ts,
            "as_of": self.as_of,
        }


class Model(abc.ABC):
    """Base class of every model. Subclasses set the class attributes and ``client_keys``."""

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str]
    #: Lua files (in ``script_package``) concatenated into the apply script.
    apply_files: ClassVar[tuple[str, ...]]
    #: Lua files of the read-time refresh script, for answers that change without events.
    refresh_files: ClassVar[tuple[str, ...] | None] = None
    script_package: ClassVar[str] = "genderd.scripts"
    #: whether keys of data layout 1 may exist in the deployment (``top`` passes its old
    #: counters to its script only then); a worker clears it for deployments created with
    #: layout 2 or later (:func:`genderd.layout.may_hold_layout1`)
    layout1: bool = True

    def __init__(self, settings: Settings, keys: Keys) -> None:
        self.settings = settings
        self.keys = keys
        self.apply_script = Script.from_files(*self.apply_files, package=self.script_package)
        self.refresh_script = (
            None
            if self.refresh_files is None
            else Script.from_files(*self.refresh_files, package=self.script_package)
        )
        # result-hash field names of the answer, built once (lookups read them per request)
        self._gender_field, self._scores_field, self._ts_field, self._at_field = (
            result_field(self.name, part).encode() for part in ("", "s", "ts", "at")
        )
        #: the result-hash fields an answer is read from (lookups ask for these only)
        self.answer_fields = (
            self._gender_field,
            self._scores_field,
            self._ts_field,
            self._at_field,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}>"

    @classmethod
    def settings_problem(cls, settings: Settings) -> str | None:
        """Why this model cannot run with ``settings`` (one line), or None."""
        return None

    # -- writing ----------------------------------------------------------------------------
    def params(self) -> list[str]:
        """ARGV of the apply script after the group and "now" (model-wide parameters)."""
        return []

    @property
    def refresh_params(self) -> tuple[str, ...]:
        """ARGV of the refresh script after the model, "now" and the write-back flag."""
        return ()

    @abc.abstractmethod
    def client_keys(self, shard: int, cid: str, events: Sequence[Event], now_ms: int) -> list[str]:
        """The keys one client of a batch needs in the apply script (its ``events`` of the
        batch, in the order they are passed), in the order of its KEYS contract: the batch
        frame of ``_lib.lua`` gives them to the script as ``KEYS[k..]``."""

    # -- reading ----------------------------------------------------------------------------
    def refresh_keys(self, shard: int, cid: str, now_ms: int) -> list[str]:
        """KEYS of the refresh script (only for models with ``refresh_files``)."""
        return [self.keys.result(shard, cid)]

    def _parts(self, fields: ResultHash) -> tuple[str, bytes | None, int, int] | None:
        """(gender, scores JSON, last event ts, as-of) of this model's answer in the client's
        result hash, or None: the one place that reads an answer out of a result hash."""
        gender = fields.get(self._gender_field)
        if gender is None:
            return None
        return (
            gender.decode(),
            fields.get(self._scores_field),
            int(fields.get(self._ts_field, 0)),
            int(fields.get(self._at_field, 0)),
        )

    def served(self, fields: ResultHash) -> dict[str, Any] | None:
        """The answer as the API serves it (SPEC §5; the stored scores JSON spliced in
        unparsed), or None. The API's hot path: no :class:`Answer` is built."""
        parts = self._parts(fields)
        if parts is None:
            return None
        gender, scores, last_event_ts, as_of = parts
        return {
            "gender": gender,
            "scores": orjson.Fragment(scores) if scores else None,
            "last_event_ts": last_event_ts,
            "as_of": as_of,
        }

    def answer(self, fields: ResultHash) -> Answer | None:
        """The answer for Python callers, or None."""
        parts = self._parts(fields)
        return None if parts is None else Answer(self.name, *parts)

    def client_data_keys(self, shard: int, cid: str, now_ms: int) -> list[str]:
        """Every key that may hold this model's data of one client at ``now_ms`` (SPEC §9:
        erasure deletes them): its result hash, and the model's own keys of the client."""
        return [self.keys.result(shard, cid)]

    def result_fields(self) -> Sequence[str]:
        """Every field this model writes in result hashes (removed on replay)."""
        return [result_field(self.name, part) for part in ("", "s", "ts", "at")]


def gender_params(settings: Settings) -> list[str]:
    """The configured genders as the counting scripts take them: their number, then the
    names, sorted (``genders_at`` in ``_lib.lua``)."""
    names = sorted(settings.genders)
    return [str(len(names)), *names]


def counter_fields(model: str, settings: Settings) -> list[str]:
    """The result-hash fields of a counting model's counters of the configured genders:
    ``<model>:n:<g>`` (events) and ``<model>:t:<g>`` (newest event ts)."""
    return [result_field(model, f"{kind}:{gender}") for gender in settings.genders for kind in "nt"]


__all__ = ["LIB", "Answer", "Model", "ResultHash", "counter_fields", "gender_params"]
