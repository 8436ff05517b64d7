"""Applying a batch of a Python model: read the clients' states, run the model in Python,
commit optimistically (``python_read.lua``, ``python_commit.lua``).

A client whose state or entries changed under it (another worker committed, or reclaimed and
applied an entry) is computed again from the state as it is now, with its entries still
pending, up to :data:`COMMIT_ATTEMPTS` times; after that its entries stay pending and are
reclaimed later.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from genderd.apply import ModelErrors, Outcome, expiry_arg
from genderd.apply.model_thread import ModelThread, Overrun, Progress, timeout_detail
from genderd.events import Event, by_client, text
from genderd.grading.plan import NO_BLOCK, UNIFORM, Block, Grading
from genderd.keys import digest, result_field
from genderd.lua import Script

if TYPE_CHECKING:
    from genderd.deployment import Deployment
    from genderd.models.python import Applied, PythonRuntime
    from genderd.transport import Transport

PYTHON_READ = Script.from_files("python_read.lua")
COMMIT_ATTEMPTS = 5  # a Python model's client computed again after a conflicting commit

#: one client's computation: the model's run, and the result fields to set and delete
_Computed = tuple["Applied", tuple[list[str], list[str]] | None]


#: the order of a uniform client's outcomes (python_commit.lua counts them with two finds)
OUTCOME_ORDER = {"r": 0, "w": 1, "n": 2}
#: the commit's reply before its variable parts: applied, erased, graded, predicted, correct,
#: skipped ids
_REPLY_HEAD = 6


def _graded_args(
    grading: Grading, block: Block, cid: str, own: list[Event], done: Applied, now: int
) -> list[str]:
    """A committed client's grading ARGV (``python_commit.lua``): its group, the marks of its
    applied events (the block's, unless the model failed on some of ``own``) and how the
    answer before each went (r: right, w: wrong, n: none)."""
    outcomes = "".join(
        "n" if before is None else "r" if before == event.gender else "w"
        for event, before in zip(done.applied, done.before, strict=True)
    )
    whole = len(done.applied) == len(own)
    marks = None if whole else grading.marks(block, done.applied, now)
    flags = (marks or block.common or block.marks[cid])[0]  # the marks that go with them
    if flags & UNIFORM:  # one slot for all: only the numbers count (python_commit.lua)
        outcomes = "".join(sorted(outcomes, key=OUTCOME_ORDER.__getitem__))
    return [block.client(cid, len(done.applied), marks=marks), outcomes]


@dataclass
class _Commit:
    """One attempt's commit call: the computed clients, their KEYS and ARGV."""

    block: Block
    args: list[str]
    keys: list[str] = field(default_factory=list)  # erasure marker, result hash per client
    cids: list[str] = field(default_factory=list)  # committed clients, in the order of keys
    applied: dict[str, list[Event]] = field(default_factory=dict)  # per committed client
    failed: ModelErrors = field(default_factory=list)


class PythonApplier:
    """Applies batches of one Python model (see :class:`genderd.apply.Applier`)."""

    def __init__(
        self, deployment: Deployment, transport: Transport, model: PythonRuntime, consumer: str
    ) -> None:
        self.transport = transport
        self.model = model
        self.consumer = consumer  # the commit claims the entries for it
        self.keys = deployment.keys
        self.client_ttl_days = deployment.settings.client_ttl_days
        self._read_fields = [
            model.state_field,
            model.version_field,
            result_field(model.name, "ts"),
            result_field(model.name),  # the stored answer: what the next event is graded on
        ]
        timeout_s = deployment.settings.model_timeout_ms / 1000
        self.thread: ModelThread[list[_Computed]] = ModelThread(model.name, timeout_s)

    async def apply(
        self,
        shard: int,
        events: Sequence[Event],
        now: int,
        grading: Grading | None = None,
        reclaimed: bool = False,
    ) -> tuple[Outcome, ModelErrors]:
        """Read, compute and commit ``events``' clients, again for those that conflicted."""
        per_client = by_client(events)
        outcome, errors = Outcome(), []
        for _ in range(COMMIT_ATTEMPTS):
            block = (
                NO_BLOCK
                if grading is None
                else grading.call(shard, self.model.name, per_client, now, reclaimed)
            )
            commit = await self._compute(shard, per_client, now, grading, block)
            retry = await self._commit(shard, commit, per_client, outcome)
            outcome.done += [
                e for cid in commit.cids if cid not in retry for e in commit.applied[cid]
            ]
            # a failure counts once its client's commit went through (a client computed again
            # may not fail on the state as it is now)
            errors += [(e, detail) for e, detail in commit.failed if e.cid not in retry]
            per_client = {cid: own for cid, own in retry.items() if own}
            if not per_client:
                break
        else:
            outcome.failed += sum(len(own) for own in per_client.values())
        return outcome, errors

    async def _compute(
        self,
        shard: int,
        per_client: dict[str, list[Event]],
        now: int,
        grading: Grading | None,
        block: Block,
    ) -> _Commit:
        """Read the clients' stored states and run the model over each client's events (in
        the worker's model thread: an event whose call overruns the limit is skipped and the
        batch computed again without it)."""
        model = self.model
        cids = list(per_client)
        keys = [self.keys.result(shard, cid) for cid in cids]
        flat = await self.transport.call(PYTHON_READ, keys, self._read_fields)
        width = len(self._read_fields)
        stored = [
            (cid, flat[width * n], flat[width * n + 2], flat[width * n + 3])
            for n, cid in enumerate(cids)
        ]
        skip: dict[str, str] = {}
        while True:
            work = functools.partial(self._run_clients, stored, per_client, now, skip)
            computed = await self.thread.call(work)
            if not isinstance(computed, Overrun):
                break
            skip[computed.event.id] = f"{timeout_detail(self.thread.timeout_s)}: abandoned"
        commit = _Commit(block, [model.name, self.consumer, expiry_arg(now, self.client_ttl_days)])
        for n, (cid, key) in enumerate(zip(cids, keys, strict=True)):
            done, fields = computed[n]
            commit.failed += done.failed
            if fields is None:
                continue
            set_, delete = fields
            version = flat[width * n + 1]
            ids = [e.id for e in done.applied]
            commit.args += ["" if version is None else text(version), str(len(ids)), *ids]
            commit.args += [str(len(set_) // 2), *set_, str(len(delete)), *delete]
            if grading is not None and block.grades:
                commit.args += _graded_args(grading, block, cid, per_client[cid], done, now)
            commit.keys += (self.keys.erased(shard, digest(cid)), key)
            commit.cids.append(cid)
            commit.applied[cid] = done.applied
        return commit

    def _run_clients(
        self,
        stored: list[tuple[str, Any, Any, Any]],
        per_client: dict[str, list[Event]],
        now: int,
        skip: dict[str, str],
        progress: Progress,
    ) -> list[_Computed]:
        """The model's run over each client's events and the fields to commit (None: none
        applied), in the model thread: every call of the model's code happens here."""
        model = self.model
        computed: list[_Computed] = []
        for cid, state, ts, answer in stored:
            before = None if answer is None else text(answer)
            done = model.run(state, per_client[cid], progress, skip, before)
            if not done.applied:
                computed.append((done, None))
                continue
            progress.begin(done.applied[-1])  # scores(state) may be slow too
            fields = model.answer_fields_of(done, None if ts is None else int(ts), now)
            progress.end()
            computed.append((done, fields))
        return computed

    async def _commit(
        self, shard: int, commit: _Commit, per_client: dict[str, list[Event]], outcome: Outcome
    ) -> dict[str, list[Event]]:
        """Make the commit call, counting it in ``outcome``: the clients that conflicted,
        with their entries still pending."""
        if not commit.cids:
            return {}
        frame = [self.keys.stream(shard), self.keys.stats(shard), self.keys.erasures(shard)]
        reply: list[Any] = await self.transport.call(
            self.model.apply_script,
            [*frame, *commit.block.keys, *commit.keys],
            [*commit.args, *commit.block.args],
        )
        applied, erased, graded, predicted, correct, skipped = (int(v) for v in reply[:_REPLY_HEAD])
        outcome.applied += applied
        outcome.erased += erased
        outcome.failed += skipped
        outcome.graded += graded
        outcome.predicted += predicted
        outcome.correct += correct
        rest = reply[_REPLY_HEAD + skipped :]
        retry: dict[str, list[Event]] = {}
        while rest:
            index, count = int(rest[0]), int(rest[1])
            pending = {text(i) for i in rest[2 : 2 + count]}
            rest = rest[2 + count :]
            cid = commit.cids[index - 1]
            retry[cid] = [e for e in per_client[cid] if e.id in pending]
        return retry


__all__ = ["COMMIT_ATTEMPTS", "PYTHON_READ", "PythonApplier"]
