"""The champion: the model a lookup that names none answers from when
``GENDERD_DEFAULT_MODEL=best`` (SPEC §14).

It starts as ``GENDERD_CHAMPION_START`` and passes to another model only on evidence: over
``GENDERD_CHAMPION_WINDOW_S`` of live grades, the challenger's paired advantage in
``accuracy_all`` has a 95% interval above zero, simultaneous over the challengers (Bonferroni),
over at least ``GENDERD_CHAMPION_MIN_EVENTS`` graded events and :data:`~genderd.grading.live.
MIN_CLIENTS` clients, and the challenger is neither FAILING nor stalled (nor off). Among several
such challengers, the one whose interval's lower end is highest (the surest gain) wins. Two
models with the same answers have a difference of zero in every client group: its interval is
[0, 0], never above zero, so equal models never take over from each other; and a new champion
must in turn be beaten by evidence, so the champion does not flap.

The check runs every ``GENDERD_CHAMPION_CHECK_S`` in whichever API process takes the check's
lock first (one at a time); every API process reads the champion as often, so that all of them
serve the same champion within one interval. Each change is recorded with its evidence in a
capped history stream; an operator can pin a model (checks then leave the champion alone but
still say which model it is significantly behind: ``behind``, the alert's signal) and unpin it.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from genderd.deployment import Deployment
from genderd.events import text
from genderd.grading.live import MIN_CLIENTS, Grade, Grades, read_window, score
from genderd.lua import Script
from genderd.settings import Settings
from genderd.transport import Links

log = logging.getLogger(__name__)

CHAMPION_SET = Script.from_files("champion_set.lua")
#: changes kept in the history stream
HISTORY_CAP = 1_000
METHOD = (
    "paired difference of accuracy_all by client group over the window, cluster-robust "
    "variance, t with groups - 1 degrees of freedom, interval simultaneous over the "
    "challengers (Bonferroni)"
)


@dataclass(frozen=True)
class Champion:
    """The champion as stored (or the start model, when none is stored yet)."""

    model: str
    since_ms: int | None  # when it became the champion (None: the start, never changed)
    pinned: bool
    evidence: dict[str, Any] | None  # why it is the champion (a change's, or a pin's reason)
    checked_ms: int | None  # the last check
    behind: str | None  # at the last check: a model it is significantly behind, if any
    recorded: bool = True  # False: nothing stored yet, the start model
    changes: int = 0  # changes, pins and unpins recorded so far (all time)
    #: when an API process serving it by default (GENDERD_DEFAULT_MODEL=best) last said so
    served_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _json(value: bytes | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        loaded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return loaded if isinstance(loaded, dict) else None


def _int(value: bytes | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


async def read_champion(links: Links, deployment: Deployment) -> Champion:
    """The stored champion, or ``GENDERD_CHAMPION_START`` when none is stored."""
    stored: Any = await links.client.hgetall(deployment.keys.champion)
    model = stored.get(b"model")
    behind = stored.get(b"behind")
    return Champion(
        model=deployment.settings.champion_start if model is None else text(model),
        since_ms=_int(stored.get(b"since_ms")),
        pinned=stored.get(b"pinned") == b"1",
        evidence=_json(stored.get(b"evidence")),
        checked_ms=_int(stored.get(b"checked_ms")),
        behind=None if not behind else text(behind),
        recorded=model is not None,
        changes=_int(stored.get(b"changes")) or 0,
        served_ms=_int(stored.get(b"served_ms")),
    )


async def served(links: Links, deployment: Deployment, now: int) -> None:
    """Say that this process answers lookups that name no model from the champion (an API
    process with ``GENDERD_DEFAULT_MODEL=best``, every check interval), so that the CLI, whose
    own settings may differ, can tell whether the champion is served."""
    await links.client.hset(deployment.keys.champion, "served_ms", now)


async def history(links: Links, deployment: Deployment, count: int) -> list[dict[str, Any]]:
    """The latest ``count`` changes, newest first: ``at`` (ms), ``what`` (change, pin,
    unpin), ``from``, ``to`` and ``evidence``."""
    rows: Any = await links.client.xrevrange(deployment.keys.champion_history, count=count)
    changes = []
    for entry_id, fields in rows:
        values = {text(k): v for k, v in fields.items()}
        at = values.get("at")
        changes.append(
            {
                "at": int(text(at)) if at else int(text(entry_id).split("-", 1)[0]),
                "what": text(values.get("what", b"")),
                "from": text(values.get("from", b"")) or None,
                "to": text(values.get("to", b"")),
                "evidence": _json(values.get("evidence")),
            }
        )
    return changes


async def _set(
    links: Links,
    deployment: Deployment,
    what: str,
    current: Champion,
    model: str,
    now: int,
    why: Any,
) -> bool:
    keys = [deployment.keys.champion, deployment.keys.champion_history]
    expected = current.model if current.recorded else ""
    args = [what, expected, model, str(now), orjson.dumps(why).decode(), str(HISTORY_CAP)]
    return bool(await links.fast.call(CHAMPION_SET, keys, [*args, current.model]))


async def pin(links: Links, deployment: Deployment, model: str, now: int, reason: str) -> None:
    """Make ``model`` the champion and keep it until :func:`unpin`."""
    current = await read_champion(links, deployment)
    await _set(links, deployment, "pin", current, model, now, {"reason": reason})


async def unpin(links: Links, deployment: Deployment, now: int, reason: str) -> Champion:
    """Let checks change the champion again (it stays the champion until then)."""
    current = await read_champion(links, deployment)
    await _set(links, deployment, "unpin", current, current.model, now, {"reason": reason})
    return await read_champion(links, deployment)


# -- the check -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    """What a check found: the model that should be the champion now (None: the champion
    stays), and the evidence of each challenger that beats the champion."""

    winner: str | None
    evidence: dict[str, Any] | None  # the winner's
    beaten_by: list[str]  # every challenger with enough evidence, surest first


def _qualifies(grade: Grade, settings: Settings) -> bool:
    versus = grade.versus
    return (
        versus is not None
        and versus.interval.low > 0
        and grade.events >= settings.champion_min_events
        and grade.clusters >= MIN_CLIENTS
    )


def evidence_of(grades: Grades, grade: Grade) -> dict[str, Any]:
    """A challenger's evidence against the champion, as recorded with a change."""
    versus = grade.versus
    assert versus is not None and grades.reference is not None
    champion = grades.grade(grades.reference)
    return {
        "from": grades.reference,
        "to": grade.model,
        "window_s": grades.window.window_s,
        "since_ms": grades.window.since_ms,
        "until_ms": grades.window.until_ms,
        "events": grade.events,
        "client_groups": grade.clusters,
        "accuracy_all": {grade.model: grade.accuracy_all, champion.model: champion.accuracy_all},
        "difference": versus.difference,
        "interval": [versus.interval.low, versus.interval.high],
        "p_value": versus.p_value,
        "p_adjusted": versus.p_adjusted,
        "challengers": versus.challengers,
        "method": METHOD,
    }


def decide(grades: Grades, settings: Settings) -> Decision:
    """Which challenger, if any, has the evidence to take over from the champion
    (``grades.reference``): the one whose interval's lower end is highest."""
    beating = [g for g in grades.models if _qualifies(g, settings)]
    beating.sort(key=lambda g: g.versus.interval.low if g.versus else 0.0, reverse=True)
    if not beating:
        return Decision(None, None, [])
    return Decision(beating[0].model, evidence_of(grades, beating[0]), [g.model for g in beating])


def eligible(deployment: Deployment, unfit: Collection[str]) -> list[str]:
    """The models that may be champion here: served by this process, graded, and not in
    ``unfit`` (FAILING, stalled or off)."""
    return [m.name for m in deployment.registry if m.grades and m.name not in unfit]


async def check(
    links: Links, deployment: Deployment, unfit: Collection[str], now: int
) -> Champion | None:
    """One check, if this process gets the check's lock (else None): read the window's grades,
    decide, record the verdict, and change the champion when a challenger has the evidence and
    the champion is not pinned. Returns the champion after the check."""
    settings, keys = deployment.settings, deployment.keys
    lock_ms = max(1, round(settings.champion_check_s * 1000))
    token = secrets.token_hex(8)
    if not await links.client.set(keys.champion_lock, token, nx=True, px=lock_ms):
        return None
    current = await read_champion(links, deployment)
    models = _compared(current.model, eligible(deployment, unfit))
    window = await read_window(links.fast, deployment, models, settings.champion_window_s, now)
    # a champion not graded by this process's models cannot be compared: it stays
    graded_here = {m.name for m in deployment.registry if m.grades}
    grades = score(window, models, current.model if current.model in graded_here else None)
    decision = decide(grades, settings)
    changed = False
    if decision.winner is not None and not current.pinned:
        changed = await _set(
            links, deployment, "change", current, decision.winner, now, decision.evidence
        )
        if changed:
            log.warning(
                "champion: %s -> %s (%+.1f pts over %s events)",
                current.model,
                decision.winner,
                100 * (decision.evidence or {}).get("difference", 0.0),
                f"{(decision.evidence or {}).get('events', 0):,}",
            )
    verdict = {"checked_ms": now, "models": models, "beaten_by": decision.beaten_by}
    await links.client.hset(
        keys.champion,
        mapping={
            "checked_ms": now,
            "check": orjson.dumps(verdict),
            # the model the champion stays behind (pinned, or changed by someone else meanwhile)
            "behind": "" if changed else decision.winner or "",
        },
    )
    return await read_champion(links, deployment)


def _compared(champion: str, candidates: Sequence[str]) -> list[str]:
    """The models a check compares: the champion first, then the candidates."""
    return [champion, *(m for m in candidates if m != champion)]


__all__ = [
    "CHAMPION_SET",
    "HISTORY_CAP",
    "Champion",
    "Decision",
    "check",
    "decide",
    "eligible",
    "evidence_of",
    "history",
    "pin",
    "read_champion",
    "served",
    "unpin",
]
