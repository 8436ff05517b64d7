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
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from genderd.apply import Applier
from genderd.apply.batch_frame import LuaApplier
from genderd.events import Event
from genderd.keys import Keys, result_field
from genderd.lua import LIB, Script
from genderd.settings import Settings

if TYPE_CHECKING:
    from genderd.deployment import Deployment
    from genderd.evaluation.predictors import Predictor
    from genderd.grading.plan import Grading
    from genderd.transport import Transport

ResultHash = Mapping[bytes, bytes]


#: a model's scores as read from a result hash: the per-gender numbers (counting models derive
#: them from their counters), the stored JSON object of them (Python models), or None (the
#: model does not count, e.g. ``last``)
Scores = dict[str, Any] | bytes | None


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ is slow
class Answer:
    """A model's answer for one client, for Python callers (the API serves
    :meth:`Model.served`, built from the same fields).

    ``scores`` are the per-gender numbers behind the answer (None: the model does not count,
    e.g. ``last``).
    """

    model: str
    gender: str
    scores: dict[str, Any] | None
    last_event_ts: int
    as_of: int

    def to_dict(self) -> dict[str, Any]:
        """The answer's fields as the API serves them (SPEC §5), scores parsed."""
        return {
            "gender": self.gender,
            "scores": self.scores,
            "last_event_ts": self.last_event_ts,
            "as_of": self.as_of,
        }


class Model(abc.ABC):
    """The framework's model: what workers, lookups, erasure, replay and status use.

    Built-in and Lua-backed models subclass it (setting the class attributes and
    ``client_keys``); the classes users write for the other kinds (``PythonModel``,
    ``TopWindow``) are wrapped in a subclass of it by the registry
    (:mod:`genderd.models.registry`), so that none of these names is theirs.
    """

    name: str
    aliases: tuple[str, ...] = ()
    description: str
    #: the apply script's Lua file (usually one), in ``script_package``; the shared chunks
    #: it names in its ``-- uses:`` line come from genderd (see :mod:`genderd.lua`;
    #: :data:`~genderd.lua.LIB` first still stands for all of them)
    apply_files: ClassVar[tuple[str, ...]]
    #: the read-time refresh script's Lua file, for answers that change without events
    refresh_files: ClassVar[tuple[str, ...] | None] = None
    #: the package holding the model's own Lua files
    script_package: ClassVar[str] = "genderd.lua"
    #: whether the model is graded live (SPEC §14): its apply script fills the frame's
    #: ``predictions`` (see ``_frame.lua``). A Lua-backed plug-in opts in by setting it
    grades: ClassVar[bool] = False

    def __init__(self, settings: Settings, keys: Keys, *, oldest_layout: int = 1) -> None:
        self.settings = settings
        self.keys = keys
        self._oldest_layout = oldest_layout
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
        self.answer_fields: tuple[bytes, ...] = (
            self._gender_field,
            self._scores_field,
            self._ts_field,
            self._at_field,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}>"

    @property
    def oldest_layout(self) -> int:
        """The oldest data layout the deployment may hold (:func:`genderd.layout.oldest_layout`,
        read when the deployment is opened; 1, anything, for a deployment built without
        Redis): scripts and readers look for earlier layouts' keys and fields only where they
        may exist."""
        return self._oldest_layout

    @property
    def defined_by(self) -> type:
        """The class registered for this model (the user's class, for the kinds the
        registry wraps)."""
        return type(self)

    def grading_keys(
        self, shard: int, cid: str, events: Sequence[Event], grading: Grading
    ) -> list[str]:
        """The extra keys the apply script needs to grade ``events`` of ``cid`` when its read
        deferred the client (``defer`` in ``_frame.lua``): none unless the script defers."""
        return []

    def applier(self, deployment: Deployment, transport: Transport, consumer: str) -> Applier:
        """How a worker applies this model's batches: its apply script on the shared batch
        frame (``consumer``: the worker's consumer name)."""
        return LuaApplier(deployment, transport, self)

    def predictor(self) -> Predictor:
        """This model's semantics in Python, for evaluation (:mod:`genderd.evaluation`).

        A model with its own Lua has none unless its class overrides this method with a Python
        reference of what its script computes. The predictor serves both of ``genderd
        evaluate``'s orders unless it has an ``arrival()`` method giving another one for
        events in arrival order (see :mod:`genderd.evaluation.predictors`).

        Raises:
            NotEvaluable: the model cannot be evaluated (the reason in one line).
        """
        # the evaluation package sits above the models: imported when asked for
        from genderd.evaluation.predictors import NotEvaluable

        raise NotEvaluable(
            f"model {self.name!r}: a Lua-backed model is not evaluable unless its class "
            "overrides predictor() with a Python reference of its script's semantics"
        )

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

    #: ARGV of the refresh script after the fields to return: result-hash fields the script
    #: reads in the same HMGET but does not return
    refresh_tail: tuple[str, ...] = ()

    @abc.abstractmethod
    def client_keys(self, shard: int, cid: str, events: Sequence[Event], now_ms: int) -> list[str]:
        """The keys one client of a batch needs in the apply script (its ``events`` of the
        batch, in the order they are passed), in the order of its KEYS contract: the batch
        frame of ``_frame.lua`` gives them to the script as ``KEYS[k..]``."""

    # -- reading ----------------------------------------------------------------------------
    def refresh_keys(self, shard: int, cid: str, now_ms: int) -> list[str]:
        """KEYS of the refresh script (only for models with ``refresh_files``)."""
        return [self.keys.result(shard, cid)]

    def _parts(self, fields: ResultHash) -> tuple[str, Scores, int, int] | None:
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
        """The answer as the API serves it (SPEC §5; a stored scores JSON is spliced in
        unparsed), or None. The API's hot path: no :class:`Answer` is built."""
        parts = self._parts(fields)
        if parts is None:
            return None
        gender, scores, last_event_ts, as_of = parts
        return {
            "gender": gender,
            "scores": orjson.Fragment(scores) if isinstance(scores, bytes) else scores,
            "last_event_ts": last_event_ts,
            "as_of": as_of,
        }

    def answer(self, fields: ResultHash) -> Answer | None:
        """The answer for Python callers, or None."""
        parts = self._parts(fields)
        if parts is None:
            return None
        gender, scores, last_event_ts, as_of = parts
        if isinstance(scores, bytes):
            scores = orjson.loads(scores)
        return Answer(self.name, gender, scores, last_event_ts, as_of)

    def client_data_keys(self, shard: int, cid: str, now_ms: int) -> list[str]:
        """Every key that may hold this model's data of one client at ``now_ms`` (SPEC §9:
        erasure deletes them): its result hash, and the model's own keys of the client."""
        return [self.keys.result(shard, cid)]

    def result_fields(self) -> Sequence[str]:
        """Every field this model writes in result hashes (removed on replay)."""
        return [result_field(self.name, part) for part in ("", "s", "ts", "at")]


def gender_params(settings: Settings) -> list[str]:
    """The configured genders as the counting scripts take them: their number, then the
    names, sorted (``genders_at`` in ``_counters.lua``)."""
    names = sorted(settings.genders)
    return [str(len(names)), *names]


def counter_fields(model: str, settings: Settings) -> list[str]:
    """The result-hash fields of a counting model's counters of the configured genders:
    ``<model>:n:<g>`` (events) and ``<model>:t:<g>`` (newest event ts)."""
    return [result_field(model, f"{kind}:{gender}") for gender in settings.genders for kind in "nt"]


class CountingModel(Model):
    """A model that keeps per-gender counters beside its answer in the result hash
    (``<model>:n:<g>`` events, ``<model>:t:<g>`` the newest event's ts; see
    ``_counters.lua``). Its scripts store the answer and the counters only (data layout 3): the
    scores and the newest event's ts are derived here, at read time, from the counters of the
    configured genders.

    An answer written by layout 1 and not touched since has no counters in the result hash:
    it is read from the ``:s``/``:ts`` fields that layout kept, which lookups also ask for
    while the deployment may hold it (:attr:`Model.oldest_layout`)."""

    def __init__(self, settings: Settings, keys: Keys, *, oldest_layout: int = 1) -> None:
        super().__init__(settings, keys, oldest_layout=oldest_layout)
        # per configured gender, sorted: its name and its two counter fields
        self._counters = [
            (
                gender,
                result_field(self.name, f"n:{gender}").encode(),
                result_field(self.name, f"t:{gender}").encode(),
            )
            for gender in sorted(settings.genders)
        ]
        counters = tuple(field for _, *both in self._counters for field in both)
        layout1 = (self._scores_field, self._ts_field) if self.oldest_layout < 2 else ()
        self.answer_fields = (self._gender_field, self._at_field, *counters, *layout1)

    def _parts(self, fields: ResultHash) -> tuple[str, Scores, int, int] | None:
        gender = fields.get(self._gender_field)
        if gender is None:
            return None
        get = fields.get
        scores: dict[str, Any] = {}
        newest = b""  # compared as the decimal strings the scripts write: shorter is smaller
        for name, count_field, ts_field in self._counters:
            count = get(count_field)
            if count is not None:
                scores[name] = int(count)
                ts = get(ts_field, b"")
                if len(ts) > len(newest) or (len(ts) == len(newest) and ts > newest):
                    newest = ts
        as_of = int(get(self._at_field, 0))
        if not scores:  # layout 1's answer: its stored scores and newest ts
            return gender.decode(), get(self._scores_field), int(get(self._ts_field, 0)), as_of
        return gender.decode(), scores, int(newest or 0), as_of


__all__ = [
    "LIB",
    "Answer",
    "CountingModel",
    "Model",
    "ResultHash",
    "Scores",
    "counter_fields",
    "gender_params",
]
