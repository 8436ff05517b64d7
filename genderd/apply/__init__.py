"""How a batch of one shard's valid events reaches a model's state: each kind of model brings
an :class:`Applier` (the model names it: :meth:`genderd.models.base.Model.applier`).

- :class:`~genderd.apply.batch_frame.LuaApplier`: one call of the model's Lua apply script on the
  shared batch frame (``_frame.lua``) per batch: the built-ins, ``TopWindow`` models and any
  Lua-backed model.
- :class:`~genderd.apply.optimistic.PythonApplier`: a Python model's optimistic read, compute in
  Python, commit (``python_read.lua``, ``python_commit.lua``).

The :class:`~genderd.processor.Processor` does what is common to every kind (validation,
dead letters, the outcome) and hands the valid events to the model's applier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from genderd.clock import client_expiry_ms
from genderd.events import Event

if TYPE_CHECKING:
    from genderd.grading.plan import Grading

#: events a model failed on, each with a one-line detail: dead-lettered (``model_error``)
ModelErrors = list[tuple[Event, str]]


@dataclass
class Outcome:
    """What processing a batch did."""

    applied: int = 0
    dead: int = 0
    failed: int = 0  # left pending after a script error; reclaimed and retried later
    erased: int = 0  # acknowledged unapplied: their client was erased after they were written
    graded: int = 0  # applied and graded (SPEC §14): predicted before it was applied
    predicted: int = 0  # graded with an answer from the model
    correct: int = 0  # graded with the right answer
    reasons: dict[str, int] = field(default_factory=dict)  # dead-letter reason -> entries
    # the events the calls acknowledged (applied, or found applied by a stale twin): what
    # event-to-answer latency is measured from. Per batch: the worker hands them to its
    # metrics and drops them, so that running totals never hold events.
    done: list[Event] = field(default_factory=list)

    @property
    def handled(self) -> int:
        """Entries this call handled one way or another (0: it found nothing to do)."""
        return self.applied + self.dead + self.failed + self.erased

    def __iadd__(self, other: Outcome) -> Outcome:
        self.applied += other.applied
        self.dead += other.dead
        self.failed += other.failed
        self.erased += other.erased
        self.graded += other.graded
        self.predicted += other.predicted
        self.correct += other.correct
        for reason, n in other.reasons.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + n
        self.done += other.done
        return self


class Applier(Protocol):
    """Applies one shard's valid events to one model, each entry's effect and ``XACK`` in
    one atomic call."""

    async def apply(
        self,
        shard: int,
        events: Sequence[Event],
        now: int,
        grading: Grading | None = None,
        reclaimed: bool = False,
    ) -> tuple[Outcome, ModelErrors]:
        """Apply ``events`` (valid, of ``shard``) at processing time ``now``, grading them as
        ``grading`` says (None: not at all; ``reclaimed``: entries taken over from other
        consumers): what it did, and the events the model failed on (still pending: the
        caller dead-letters them)."""
        ...


def expiry_arg(now: int, client_ttl_days: int) -> str:
    """ARGV of the apply scripts: when the clients they touch expire (``"0"``: never)."""
    return str(client_expiry_ms(now, client_ttl_days))


__all__ = ["Applier", "ModelErrors", "Outcome", "expiry_arg"]
