"""Models written in plain Python: subclass :class:`PythonModel` and implement
``identify_gender`` (SPEC §7).

The framework keeps one JSON object of state per (model, client) in the client's result hash
(``<model>:j``), reads the states of a batch's clients, calls ``identify_gender`` once per
event (in stream order) and commits the new states, answers and the entries' ``XACK`` in one
atomic call per batch (``genderd/lua/python_commit.lua``): each event's effect happens exactly once
under competing workers, kill -9, reclaims and stale batches.

An exception in ``identify_gender``, an answer that is not a configured gender, or a state that
is not JSON or grows over :data:`STATE_MAX_BYTES` dead-letters that event (reason
``model_error``) and leaves the client's state as it was before it; the rest of the batch
applies.
"""

from __future__ import annotations

import abc
import inspect
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from genderd.apply.model_thread import Abandoned, Progress, timeout_detail
from genderd.apply.optimistic import PythonApplier
from genderd.errors import ModelError
from genderd.events import DETAIL_MAX_CHARS, Event
from genderd.keys import Keys, result_field
from genderd.models.base import Model
from genderd.settings import Settings

if TYPE_CHECKING:
    from genderd.deployment import Deployment
    from genderd.evaluation.predictors import PythonPredictor
    from genderd.transport import Transport

#: Largest state a client may keep per model, as JSON (bytes).
STATE_MAX_BYTES = 64 * 1024


@dataclass
class Applied:
    """One client's run of a model over its events: what to commit, and what failed."""

    state: bytes  # the new state, as JSON
    answer: str | None
    value: dict[str, Any] = field(default_factory=dict)  # the new state
    applied: list[Event] = field(default_factory=list)
    failed: list[tuple[Event, str]] = field(default_factory=list)  # (event, one-line detail)
    #: the answer just before each applied event (``applied[i]``), from the stored one given
    #: to :meth:`PythonRuntime.run`: what the event is graded against (SPEC §14)
    before: list[str | None] = field(default_factory=list)


class PythonModel(abc.ABC):
    """Base class of models written in Python: the user's class, and the user's namespace.

    A subclass sets ``name`` (its consumer group, ``?model=`` value and result fields), and
    optionally ``aliases`` and ``description``, and implements :meth:`identify_gender`;
    optionally :meth:`scores`. It knows nothing of Redis, and any other name in it is free:
    the framework wraps an instance in a :class:`PythonRuntime`. It is instantiated once per
    process with no arguments, or with ``settings=`` (the deployment's
    :class:`~genderd.settings.Settings`) when its ``__init__`` takes that keyword.
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = "a model written in Python"

    @abc.abstractmethod
    def identify_gender(self, state: dict[str, Any], event: Event) -> str | None:
        """Update ``state`` (this client's JSON object, ``{}`` at first) with ``event`` and
        return the client's answer: a configured gender, or None for no answer."""

    def scores(self, state: dict[str, Any]) -> dict[str, float] | None:
        """The numbers behind the answer, served as ``scores`` (None: not served)."""
        return None


def instantiate(definition: type[Any], settings: Settings) -> Any:
    """An instance of a user's model class: with ``settings=`` when its ``__init__`` takes
    that keyword, else with no arguments."""
    if "settings" in inspect.signature(definition).parameters:
        return definition(settings=settings)
    return definition()


class PythonRuntime(Model):
    """The framework's side of a :class:`PythonModel`: its state and answer fields, running
    it over a client's events, and its applier (:mod:`genderd.apply.optimistic`)."""

    apply_files = ("python_commit.lua",)
    grades = True  # the worker knows each answer: the commit grades (python_commit.lua)

    def __init__(
        self,
        definition: type[PythonModel],
        settings: Settings,
        keys: Keys,
        *,
        oldest_layout: int = 1,
    ) -> None:
        #: the user's model, instantiated once
        self.definition: PythonModel = instantiate(definition, settings)
        self.name = definition.name
        self.aliases = tuple(definition.aliases)
        self.description = definition.description
        super().__init__(settings, keys, oldest_layout=oldest_layout)
        self.state_field = result_field(self.name, "j")
        self.version_field = result_field(self.name, "v")
        self._ts, self._gender, self._scores_name, self._at = (
            result_field(self.name, part) for part in ("ts", "", "s", "at")
        )

    @property
    def defined_by(self) -> type:
        return type(self.definition)

    def applier(self, deployment: Deployment, transport: Transport, consumer: str) -> PythonApplier:
        return PythonApplier(deployment, transport, self, consumer)

    def predictor(self) -> PythonPredictor:
        from genderd.evaluation.predictors import PythonPredictor

        return PythonPredictor(self)

    def client_keys(self, shard: int, cid: str, events: Sequence[Event], now_ms: int) -> list[str]:
        return [self.keys.result(shard, cid)]

    def result_fields(self) -> Sequence[str]:
        return [*super().result_fields(), self.state_field, self.version_field]

    def run(
        self,
        state_json: bytes | None,
        events: Iterable[Event],
        progress: Progress | None = None,
        skip: Mapping[str, str] | None = None,
        stored_answer: str | None = None,
    ) -> Applied:
        """Apply ``events`` in order to the state stored as ``state_json`` (None: a new
        client), whose stored answer is ``stored_answer``. An event the model fails on leaves the
        state (and the answer) as it was before it.

        With ``progress`` (a worker's helper thread: :mod:`genderd.apply.model_thread`) each
        call is marked there, and a call that took longer than its limit fails its event;
        ``skip`` maps the ids of events not to run again to their failure's detail."""
        current = state_json or b"{}"
        state = orjson.loads(current)
        done = Applied(current, None)
        answered = False
        before = stored_answer
        for event in events:
            if skip and event.id in skip:
                done.failed.append((event, skip[event.id]))
                continue
            if progress is not None:
                progress.begin(event)
            try:
                answer = self._identify(state, event)
                if progress is not None:
                    _within(progress.end(), progress.timeout_s)
                new = _dumped(state)
            except BaseException as error:  # the model's failure, not the pipeline's
                if not contained(error):
                    raise
                detail = error if isinstance(error, ModelError) else _summary(error)
                done.failed.append((event, str(detail)[:DETAIL_MAX_CHARS]))
                state = orjson.loads(current)
                continue
            current, answered = new, True
            done.answer = answer
            done.applied.append(event)
            done.before.append(before)
            before = answer
        done.state, done.value = current, state
        if not answered:
            done.answer = None
        return done

    def step(self, state_json: bytes | None, event: Event) -> tuple[bytes, str | None, Any] | None:
        """:meth:`run` over one event, lean (``genderd evaluate`` calls it once per event and
        model): the new state as JSON, the answer and the new state; None when the model
        failed on the event (the state and answer stay as they were)."""
        try:
            state = orjson.loads(state_json or b"{}")
            answer = self._identify(state, event)
            return _dumped(state), answer, state
        except BaseException as error:  # the model's failure, not the pipeline's
            if not contained(error):
                raise
            return None

    def _identify(self, state: dict[str, Any], event: Event) -> str | None:
        answer = self.definition.identify_gender(state, event)
        if answer is not None and answer not in self.settings.genders:
            raise ModelError(
                f"identify_gender answered {answer!r}, not one of the configured genders "
                f"({', '.join(self.settings.genders)})"
            )
        if not isinstance(state, dict):
            raise ModelError("the state must stay a dict")
        return answer

    def answer_fields_of(
        self, done: Applied, stored_ts: int | None, now_ms: int
    ) -> tuple[list[str], list[str]]:
        """The result-hash fields to set (name, value, ...) and to delete for ``done``."""
        ts = max(e.ts for e in done.applied)
        if stored_ts is not None and stored_ts > ts:
            ts = stored_ts
        set_ = [self.state_field, done.state.decode(), self._ts, str(ts)]
        if done.answer is None:
            return set_, [self._gender, self._scores_name, self._at]
        set_ += [self._gender, done.answer, self._at, str(now_ms)]
        scores = self._scores(done.value)
        if scores is None:
            return set_, [self._scores_name]
        return [*set_, self._scores_name, scores], []

    def _scores(self, state: dict[str, Any]) -> str | None:
        """:meth:`served_scores` as the JSON the API serves."""
        scores = self.served_scores(state)
        if scores is None:
            return None
        try:
            return orjson.dumps(scores).decode()
        except Exception:  # e.g. an integer over 64 bits
            return None

    def served_scores(self, state: dict[str, Any]) -> dict[str, Any] | None:
        """The model's :meth:`~PythonModel.scores` of ``state`` as stored and served; None
        when the model gives none (or gives something that is not a mapping of names to
        numbers, or fails). A number is an int or a finite float: not a bool (which JSON would
        serve as ``true``), not NaN or an infinity (which it would serve as ``null``)."""
        try:
            scores = self.definition.scores(state)
            if scores is None:
                return None
            for key, value in scores.items():  # a loop: it runs per event in evaluations
                if not isinstance(key, str) or not _finite_number(value):
                    return None
            return dict(scores)
        except BaseException as error:
            if not contained(error):
                raise
            return None


def _dumped(state: dict[str, Any]) -> bytes:
    """``state`` as JSON; a :class:`ModelError` when it is over :data:`STATE_MAX_BYTES`."""
    new = orjson.dumps(state)
    if len(new) > STATE_MAX_BYTES:
        raise ModelError(f"state grew to {len(new):,} bytes, over the limit of {STATE_MAX_BYTES:,}")
    return new


def _finite_number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def contained(error: BaseException) -> bool:
    """Whether ``error``, raised by a model's code, is that event's failure (``model_error``)
    rather than something to pass on: everything a model raises (``SystemExit``,
    ``CancelledError``, ``GeneratorExit`` too), except the framework's :class:`Abandoned` and
    a ``KeyboardInterrupt`` on the main thread (Ctrl-C during ``genderd evaluate`` or
    ``genderd.testing``). A worker runs models in a helper thread, where no signal ever
    raises: a ``KeyboardInterrupt`` there is the model's own."""
    if isinstance(error, Abandoned):
        return False
    if isinstance(error, KeyboardInterrupt):
        return threading.current_thread() is not threading.main_thread()
    return True


def _within(elapsed_s: float, timeout_s: float) -> None:
    """Fail a call that returned, but later than the limit (as if it had not returned)."""
    if elapsed_s > timeout_s:
        raise ModelError(f"{timeout_detail(timeout_s)}: {elapsed_s * 1000:,.0f} ms")


def _summary(error: BaseException) -> str:
    """``Type: message`` on one line."""
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


__all__ = [
    "STATE_MAX_BYTES",
    "Applied",
    "ModelError",
    "PythonModel",
    "PythonRuntime",
    "contained",
    "instantiate",
]
