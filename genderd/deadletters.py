"""Dead letters (SPEC §2): list them, show them, re-drive them once fixed, purge them.

A worker copies an entry it cannot apply to its shard's dead-letter stream
(``<prefix>:{sN}:dead``) with the original fields plus ``_id`` (the entry id), ``_model``,
``_reason`` and ``_detail``. An entry that fails validation is dead-lettered by every model,
so it stands there once per model.

Re-driving *one model's* dead letters (``redrive_model``, ``genderd dead redrive --model M``)
applies them to that model only, exactly once: each original entry is made pending again in
the model's consumer group, atomically with the deletion of its dead letter
(``redrive_model.lua``), and the model's workers reclaim and apply it like any pending entry
(state change and ``XACK`` in one call). The other models' groups are not touched, so the
entry is never counted twice; a repeated or interrupted run re-drives each dead letter once,
since it is gone once re-driven. It works while the original entry is retained in its shard
stream (``GENDERD_RETENTION_DAYS``).

Re-driving all models' copies (``redrive``, without ``--model``) takes an original entry
(all its copies) and writes its event again, to the stream of the shard its client belongs to,
once the cause is fixed: a producer that used the wrong shard rule, a gender added to
``GENDERD_GENDERS``. The event keeps its time: its ``ts``, or the original entry id's time. An
entry is re-driven only when every model dead-lettered it; otherwise some model applied it,
and writing it again would count it twice there. The write is guarded by a marker for the
original entry, so an interrupted re-drive run again adds nothing twice; the dead letters are
deleted after the write.

A re-drive never brings an erased client back (SPEC §9). Stream ids are ordered only within
one stream, and an erasure marks the client in every shard with that shard's own last id
(:mod:`genderd.erasure`). An entry of the client's own shard is compared with the marker there
inside ``redrive.lua``. An entry written to the wrong shard (shard 3 for a client of shard 9)
is compared with the client's marker *in shard 3*, where its id belongs: first the marker in
shard 9 is read, then the one in shard 3; the entry is dropped as erased when it is not after
shard 3's marker, and otherwise ``redrive.lua`` writes it only if shard 9's marker is still
what was read. An erasure marks every other shard before the client's own, so one that began
after the check changes shard 9's marker (the check is then made again), and one that marks
shard 9 after the write covers the written entry (its id is before the new marker, and the
erasure's scan deletes it).

Deleting dead letters (a purge, a re-drive) lowers the ``<model>:dead`` counters in the same
atomic call (``dead_delete.lua``), as erasure, ``redrive --model``, replay and the
dead-letter stream's cap do: ``genderd status`` and ``genderd dead`` agree.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from genderd import catalog, pause
from genderd.clock import MS_PER_DAY
from genderd.deployment import Deployment
from genderd.errors import UnavailableError
from genderd.events import Event, Invalid, Reason, parse_entry, text

__all__ = [
    "DeadLetter",
    "Event",
    "ModelRedriven",
    "Redriven",
    "ReplayUnderwayError",
    "parse_entry",
    "purge",
    "redrive",
    "redrive_model",
    "reset_model",
    "scan",
    "summary",
]
from genderd.keys import digest
from genderd.lua import Script
from genderd.streams import REDRIVE_CONSUMER, Fields, parse_id
from genderd.transport import AsyncClient, Transport

PAGE = 1_000
META = (b"_id", b"_model", b"_reason", b"_detail")
REDRIVE = Script.from_files("redrive.lua")
REDRIVE_MODEL = Script.from_files("redrive_model.lua")
DEAD_RESET = Script.from_files("dead_reset.lua")
DEAD_DELETE = Script.from_files("dead_delete.lua")
REDRIVE_PAGE = 100  # dead letters moved per redrive_model.lua call (one atomic step)
#: how long an entry re-driven to one model is remembered as not to be graded: its workers
#: reclaim it within claim_idle_ms, a week leaves room for workers that are down
REDRIVEN_KEEP_S = 7 * 86_400
REDRIVE_CHECKS = 10  # times a cross-shard re-drive checks again while erasures move a marker


@dataclass(frozen=True)
class DeadLetter:
    """One copy of a dead-lettered entry."""

    shard: int
    dead_id: str  # the copy's id in the dead-letter stream
    entry_id: str  # the original entry's id in the shard's stream
    model: str
    reason: str
    detail: str
    fields: Fields  # the original fields, in order

    def event_fields(self) -> dict[str, str]:
        """The original fields as text (for display)."""
        return {
            name.decode(errors="replace"): value.decode(errors="replace")
            for name, value in self.fields
        }


def _letter(shard: int, dead_id: Any, raw: dict[bytes, bytes]) -> DeadLetter:
    return DeadLetter(
        shard=shard,
        dead_id=text(dead_id),
        entry_id=text(raw.get(b"_id", b"")),
        model=text(raw.get(b"_model", b"")),
        reason=text(raw.get(b"_reason", b"")),
        detail=raw.get(b"_detail", b"").decode(errors="replace"),
        fields=[(k, v) for k, v in raw.items() if k not in META],
    )


async def scan(
    client: AsyncClient,
    deployment: Deployment,
    *,
    shards: Sequence[int] | None = None,
    reason: str | None = None,
    model: str | None = None,
) -> AsyncIterator[DeadLetter]:
    """Every dead letter of ``shards`` (default: all), oldest first per shard, filtered."""
    for shard in deployment.shards if shards is None else shards:
        key, start = deployment.keys.dead(shard), "-"
        while True:
            page: Any = await client.xrange(key, min=start, max="+", count=PAGE)
            for dead_id, raw in page:
                letter = _letter(shard, dead_id, raw)
                if (reason is None or letter.reason == reason) and (
                    model is None or letter.model == model
                ):
                    yield letter
            if len(page) < PAGE:
                break
            start = f"({text(page[-1][0])}"


async def summary(
    client: AsyncClient, deployment: Deployment, shards: Sequence[int] | None = None
) -> Counter[tuple[str, int]]:
    """How many dead letters there are per (reason, shard)."""
    counts: Counter[tuple[str, int]] = Counter()
    async for letter in scan(client, deployment, shards=shards):
        counts[(letter.reason, letter.shard)] += 1
    return counts


@dataclass
class Redriven:
    """What a re-drive did, per original entry."""

    written: list[str] = field(default_factory=list)  # entry ids written again
    before: list[str] = field(default_factory=list)  # written by an earlier (interrupted) run
    partial: list[str] = field(default_factory=list)  # some model applied it: left alone
    invalid: dict[str, str] = field(default_factory=dict)  # still invalid: id -> why
    erased: list[str] = field(default_factory=list)  # its client was erased since: dropped
    deleted: int = 0  # dead-letter copies deleted


async def redrive(
    client: AsyncClient,
    transport: Transport,
    deployment: Deployment,
    letters: Sequence[DeadLetter],
    *,
    dry_run: bool = False,
) -> Redriven:
    """Write the events of ``letters`` again, to their client's shard, at most once each
    (see the module docstring); delete the dead letters of those written."""
    settings = deployment.settings
    now = deployment.clock()
    # every model of the deployment (recorded, or with a group), served here or not: an entry
    # one of them applied must not reach it a second time
    models = set(await catalog.read(transport, deployment)) | set(deployment.registry.names())
    ttl_ms = settings.retention_days * MS_PER_DAY
    by_entry = await _all_copies(client, deployment, letters, models)
    done = Redriven()
    for (shard, entry_id), copies in by_entry.items():
        if {c.model for c in copies} != models:
            done.partial.append(entry_id)
            continue
        if copies[0].reason == Reason.DUPLICATE_FIELD.value:
            # the dead letter keeps one value per name: which one was meant is unknown
            done.invalid[entry_id] = "duplicate_field: resend it from the producer"
            continue
        parsed = parse_entry(
            entry_id, copies[0].fields, settings.genders, now, settings.max_future_ms
        )
        if isinstance(parsed, Invalid):
            done.invalid[entry_id] = f"{parsed.reason.value}: {parsed.detail}"
            continue
        if dry_run:
            done.written.append(entry_id)
            continue
        written = await _write(client, transport, deployment, shard, parsed, ttl_ms)
        if written is None:
            done.erased.append(entry_id)
        else:
            (done.written if written else done.before).append(entry_id)
        done.deleted += await _delete(transport, deployment, shard, [c.dead_id for c in copies])
    return done


async def _all_copies(
    client: AsyncClient, deployment: Deployment, letters: Sequence[DeadLetter], models: set[str]
) -> dict[tuple[int, str], list[DeadLetter]]:
    """The chosen letters grouped by original entry, with every other copy of the same entries
    (one per model): the shards of entries that lack a model's copy (chosen by ``--model``)
    are scanned again; the others are complete already."""
    by_entry: dict[tuple[int, str], list[DeadLetter]] = defaultdict(list)
    for letter in letters:
        by_entry[(letter.shard, letter.entry_id)].append(letter)
    lacking = {key for key, copies in by_entry.items() if {c.model for c in copies} != models}
    if lacking:
        for key in lacking:
            by_entry[key] = []
        async for letter in scan(client, deployment, shards=sorted({s for s, _ in lacking})):
            key = (letter.shard, letter.entry_id)
            if key in lacking:
                by_entry[key].append(letter)
    return by_entry


async def _write(
    client: AsyncClient,
    transport: Transport,
    deployment: Deployment,
    source: int,
    event: Event,
    ttl_ms: int,
) -> bool | None:
    """True: written; False: written by an earlier run; None: its client was erased since
    (see the module docstring)."""
    keys = deployment.keys
    target = deployment.shard_of(event.cid)
    digest_ = digest(event.cid)
    script_keys = [
        keys.stream(target),
        keys.redriven(target, source, event.id),
        keys.erased(target, digest_),
    ]
    # The event keeps its time: its ts, or the time of the entry id it first arrived with.
    # (parse_entry gave it the entry id's time when the entry had no ts)
    fields = ["cid", event.cid, "gender", event.gender, "ts", event.ts]
    for _ in range(REDRIVE_CHECKS):
        seen = ""
        if source != target:
            # the target's marker first, then the source's: see the module docstring
            here = await client.get(keys.erased(target, digest_))
            there = await client.get(keys.erased(source, digest_))
            if there is not None and not _after(event.id, text(there)):
                return None
            seen = "none" if here is None else text(here)
        reply = await transport.call(REDRIVE, script_keys, [ttl_ms, event.id, seen, *fields])
        if reply in (b"erased", "erased"):
            return None
        if reply not in (b"changed", "changed"):
            return bool(reply)
    return None  # erasures of this client keep running: drop it rather than risk it


def _after(entry_id: str, cutoff: str) -> bool:
    """Whether ``entry_id`` is after the marker id ``cutoff`` (an id that is not a stream id
    is not: it cannot be shown to be newer)."""
    try:
        return parse_id(entry_id) > parse_id(cutoff)
    except ValueError:
        return False


async def _delete(
    transport: Transport, deployment: Deployment, shard: int, dead_ids: Sequence[str]
) -> int:
    """Delete dead letters of ``shard`` and lower their models' counters (dead_delete.lua)."""
    keys = [deployment.keys.dead(shard), deployment.keys.stats(shard)]
    deleted = 0
    for start in range(0, len(dead_ids), PAGE):
        deleted += int(
            await transport.call(DEAD_DELETE, keys, list(dead_ids[start : start + PAGE]))
        )
    return deleted


async def purge(transport: Transport, deployment: Deployment, letters: Sequence[DeadLetter]) -> int:
    """Delete ``letters`` from the dead-letter streams, lowering their models' ``<model>:dead``
    counters in the same call; return how many were deleted."""
    by_shard: dict[int, list[str]] = defaultdict(list)
    for letter in letters:
        by_shard[letter.shard].append(letter.dead_id)
    deleted = 0
    for shard, ids in sorted(by_shard.items()):
        deleted += await _delete(transport, deployment, shard, ids)
    return deleted


@dataclass
class ModelRedriven:
    """What a re-drive of one model's dead letters did, per dead letter."""

    redriven: list[str] = field(default_factory=list)  # original ids pending again for M
    invalid: dict[str, str] = field(default_factory=dict)  # still invalid: id -> why
    gone: list[str] = field(default_factory=list)  # no longer in the stream (trimmed, erased)
    #: the model has no consumer group on the entry's shard: original id -> shard
    no_group: dict[str, int] = field(default_factory=dict)
    missing: int = 0  # dead letters that went meanwhile (another run, a purge, an erasure)


def still_invalid(deployment: Deployment, letter: DeadLetter, now: int) -> str | None:
    """Why ``letter``'s original entry would be dead-lettered again at once, or None."""
    settings = deployment.settings
    if letter.reason == Reason.DUPLICATE_FIELD.value:
        return "duplicate_field: resend it from the producer"
    parsed = parse_entry(
        letter.entry_id, letter.fields, settings.genders, now, settings.max_future_ms
    )
    if isinstance(parsed, Invalid):
        return f"{parsed.reason.value}: {parsed.detail}"
    if deployment.shard_of(parsed.cid) != letter.shard:
        return "wrong_shard: re-drive it without --model, to its client's shard"
    return None


async def redrive_model(
    transport: Transport,
    deployment: Deployment,
    model: str,
    letters: Sequence[DeadLetter],
    *,
    dry_run: bool = False,
) -> ModelRedriven:
    """Make the original entries of ``model``'s ``letters`` pending again in ``model``'s
    group, each atomically with the deletion of its dead letter (see the module docstring).
    Entries still invalid, and those of a shard where the model has no group, are left where
    they are. Raises :class:`ReplayUnderwayError`, before each step, while a replay of
    ``model`` runs or an interrupted one left it half rebuilt."""
    await refuse_during_replay(transport, deployment, model)
    now = deployment.clock()
    done = ModelRedriven()
    by_shard: dict[int, list[DeadLetter]] = defaultdict(list)
    for letter in letters:
        if letter.model != model:
            continue
        why = still_invalid(deployment, letter, now)
        if why is not None:
            done.invalid[letter.entry_id] = why
        else:
            by_shard[letter.shard].append(letter)
    for shard, chosen in sorted(by_shard.items()):
        if dry_run:
            done.redriven += [letter.entry_id for letter in chosen]
            continue
        for start in range(0, len(chosen), REDRIVE_PAGE):
            await refuse_during_replay(transport, deployment, model)
            await _move(
                transport, deployment, model, shard, chosen[start : start + REDRIVE_PAGE], done
            )
    return done


async def _move(
    transport: Transport,
    deployment: Deployment,
    model: str,
    shard: int,
    page: Sequence[DeadLetter],
    done: ModelRedriven,
) -> None:
    """One atomic step of :func:`redrive_model` (``redrive_model.lua``), counted in ``done``."""
    keys = deployment.keys
    script_keys = [
        keys.stream(shard),
        keys.dead(shard),
        keys.stats(shard),
        keys.redriven_ids(shard, model),
    ]
    args: list[str | int] = [
        model,
        REDRIVE_CONSUMER,
        deployment.settings.claim_idle_ms,
        REDRIVEN_KEEP_S,
    ]
    for letter in page:
        args += [letter.dead_id, letter.entry_id]
    reply = await transport.call(REDRIVE_MODEL, script_keys, args)
    left = {text(dead_id): text(why) for dead_id, why in zip(reply[1::2], reply[2::2], strict=True)}
    for letter in page:
        why = left.get(letter.dead_id)
        if why is None:
            done.redriven.append(letter.entry_id)
        elif why == "gone":
            done.gone.append(letter.entry_id)
        elif why == "nogroup":
            done.no_group[letter.entry_id] = shard
        else:
            done.missing += 1


class ReplayUnderwayError(UnavailableError, RuntimeError):
    """A replay of the model runs, or an interrupted one left it half rebuilt: the replay
    applies the model's retained entries again, those of its dead letters included, and
    deletes those dead letters; a re-drive meanwhile is refused (it would race the replay's
    deletion of the model's groups and dead letters)."""

    def __init__(self, model: str, holder: str) -> None:
        if holder == pause.MARKER_ONLY:
            why = (
                f"an interrupted replay left {model} half rebuilt: run `genderd replay --model "
                f"{model}`, which applies the retained entries of its dead letters again"
            )
        else:
            why = (
                f"a replay of {model} is running ({holder}): it applies the retained entries "
                f"of {model}'s dead letters again; re-drive what is left once it has ended"
            )
        super().__init__(why)


async def refuse_during_replay(transport: Transport, deployment: Deployment, model: str) -> None:
    """Raise :class:`ReplayUnderwayError` while ``model`` is paused for a replay."""
    holder = await pause.replay_of(transport, deployment.keys, model)
    if holder is not None:
        raise ReplayUnderwayError(model, holder)


def since_ms(letter: DeadLetter) -> int:
    """When ``letter`` was written (its dead-letter id's time, ms)."""
    return parse_id(letter.dead_id)[0]


async def reset_model(transport: Transport, deployment: Deployment, model: str) -> tuple[int, int]:
    """Before a replay of ``model`` (its ``<model>:dead`` counters reset): delete its dead
    letters whose original entry is retained (the replay dead-letters them again if they still
    fail) and count the others again (``dead_reset.lua``); (deleted, kept)."""
    keys = deployment.keys
    deleted = kept = 0
    for shard in deployment.shards:
        after = "-"
        while True:
            reply = await transport.call(
                DEAD_RESET,
                [keys.stream(shard), keys.dead(shard), keys.stats(shard)],
                [model, after, PAGE],
            )
            deleted, kept = deleted + int(reply[1]), kept + int(reply[2])
            after = text(reply[0])
            if not after:
                break
    return deleted, kept
