"""The event type, its validation (SPEC §2) and the stream-entry id helpers.

Validation is one function used by every path that accepts events: workers (on what they read
from a stream), the producer and the CLI (before they write), and later the HTTP ingest.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from genderd.errors import InputError

CID_MAX_CHARS = 128
DETAIL_MAX_CHARS = 200  # a dead letter's detail is cut to this length
TS_MAX_DIGITS = 15  # milliseconds up to year 33658: exact in a Lua double
# fullmatch: "$" would also match before a final newline ("1795700000000\n")
_TS = re.compile(rf"[0-9]{{1,{TS_MAX_DIGITS}}}")


class Reason(str, enum.Enum):
    """Machine-readable dead-letter reasons."""

    MISSING_CID = "missing_cid"
    BAD_CID = "bad_cid"
    MISSING_GENDER = "missing_gender"
    UNKNOWN_GENDER = "unknown_gender"
    BAD_TS = "bad_ts"
    FUTURE_TS = "future_ts"
    DUPLICATE_FIELD = "duplicate_field"
    WRONG_SHARD = "wrong_shard"
    MAX_DELIVERIES = "max_deliveries"
    MODEL_ERROR = "model_error"  # a Python model raised, or answered something not configured


@dataclass(frozen=True, slots=True)
class Event:
    """A valid page-view event as the models see it."""

    id: str  # stream entry id "<ms>-<seq>"
    cid: str
    gender: str  # normalised: trimmed, lowercase, one of the configured genders
    ts: int  # event time in ms; the entry id's ms part when the producer gave none


@dataclass(frozen=True, slots=True)
class Invalid:
    """An entry that failed validation, with the reason and a human-readable detail."""

    id: str
    reason: Reason
    detail: str


class EventError(InputError, ValueError):
    """A bad event, raised by :func:`check_event` (producer side) with the reason code."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def entry_ms(entry_id: str) -> int:
    """The millisecond part of a stream entry id."""
    return int(entry_id.split("-", 1)[0])


def text(value: object) -> str:
    """A field's or a Redis reply's value as text: bytes decoded as UTF-8 (a
    UnicodeDecodeError is a ValueError: callers map it), anything else by ``str``."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _text(value: object) -> str | None:
    return None if value is None else text(value)


def by_client(events: Iterable[Event]) -> dict[str, list[Event]]:
    """``events`` grouped per client, in the order each client first appears (a batch's
    clients are applied in this order, each with its events in the order given)."""
    per_client: dict[str, list[Event]] = {}
    for event in events:
        per_client.setdefault(event.cid, []).append(event)
    return per_client


def cid_problem(cid: str) -> str | None:
    """Why ``cid`` is not a valid client id, or None when it is."""
    if not cid:
        return "cid is empty"
    if len(cid) > CID_MAX_CHARS:
        return f"cid has {len(cid)} characters, at most {CID_MAX_CHARS} are allowed"
    # Whitespace and control characters are all non-printable (categories Cc, Cf, Zs, Zl, Zp,
    # ... in str.isprintable) except the ASCII space: two C-level scans instead of a loop.
    if cid.isprintable() and " " not in cid:
        return None
    for char in cid:
        if char.isspace() or not char.isprintable():
            return f"cid contains whitespace or a control character ({char!r})"
    return None


def _normalise(
    fields: Mapping[str, object] | Mapping[bytes, bytes],
    genders: Collection[str],
) -> tuple[str, str, int | None]:
    """Check the producer fields; return (cid, gender, ts or None) or raise EventError."""
    get = fields.get
    raw_cid = get("cid", get(b"cid", None))  # type: ignore[call-overload]
    raw_gender = get("gender", get(b"gender", None))  # type: ignore[call-overload]
    raw_ts = get("ts", get(b"ts", None))  # type: ignore[call-overload]
    try:
        cid = _text(raw_cid)
    except ValueError:
        raise EventError(Reason.BAD_CID, "cid is not valid UTF-8") from None
    if cid is None:
        raise EventError(Reason.MISSING_CID, "the cid field is missing")
    problem = cid_problem(cid)
    if problem:
        raise EventError(Reason.BAD_CID, problem)
    try:
        gender_text = _text(raw_gender)
    except ValueError:
        raise EventError(Reason.UNKNOWN_GENDER, "gender is not valid UTF-8") from None
    if gender_text is None:
        raise EventError(Reason.MISSING_GENDER, "the gender field is missing")
    gender = gender_text.strip().lower()
    if gender not in genders:
        shown = gender_text if len(gender_text) <= 40 else gender_text[:40] + "..."
        raise EventError(
            Reason.UNKNOWN_GENDER, f"gender {shown!r} is not one of {', '.join(sorted(genders))}"
        )
    if raw_ts is None:
        return cid, gender, None
    if isinstance(raw_ts, int) and not isinstance(raw_ts, bool):
        ts_text = str(raw_ts)
    else:
        try:
            ts_text = _text(raw_ts) or ""
        except ValueError:
            ts_text = ""
    if not _TS.fullmatch(ts_text):
        shown = ts_text if len(ts_text) <= 40 else ts_text[:40] + "..."
        raise EventError(
            Reason.BAD_TS, f"ts {shown!r} is not a non-negative integer of milliseconds"
        )
    return cid, gender, int(ts_text)


def check_event(
    fields: Mapping[str, object],
    genders: Collection[str],
    now_ms: int,
    max_future_ms: int,
) -> tuple[str, str, int | None]:
    """Validate an event before it is written; raise :class:`EventError` if it is bad.

    Returns the normalised (cid, gender, ts); ts is None when the producer gave none.
    """
    cid, gender, ts = _normalise(fields, genders)
    if ts is not None and ts > now_ms + max_future_ms:
        raise EventError(
            Reason.FUTURE_TS, f"ts {ts} is {ts - now_ms} ms ahead of the clock ({now_ms})"
        )
    return cid, gender, ts


def _unique(fields: Sequence[tuple[bytes, bytes]]) -> dict[bytes, bytes] | bytes:
    """The fields as a dict, or the first name given twice."""
    mapping: dict[bytes, bytes] = {}
    for name, value in fields:
        if name in mapping:
            return name
        mapping[name] = value
    return mapping


def parse_entry(
    entry_id: str,
    fields: Sequence[tuple[bytes, bytes]] | Mapping[bytes, bytes] | Mapping[str, object],
    genders: Collection[str],
    now_ms: int,
    max_future_ms: int,
) -> Event | Invalid:
    """Turn a stream entry into an :class:`Event`, or an :class:`Invalid` with its reason.

    ``fields``: the entry's field/value pairs as read (a name given twice is
    ``duplicate_field``), or a mapping. Without ``ts`` the event time is the entry id's time,
    which must not be ahead of the clock either (an id given explicitly by a producer).
    """
    if not isinstance(fields, Mapping):
        unique = _unique(fields)
        if isinstance(unique, bytes):
            name = unique.decode("utf-8", errors="replace")[:40]
            return Invalid(entry_id, Reason.DUPLICATE_FIELD, f"the field {name!r} is given twice")
        fields = unique
    try:
        cid, gender, ts = check_event(fields, genders, now_ms, max_future_ms)  # type: ignore[arg-type]
    except EventError as error:
        return Invalid(entry_id, error.reason, error.detail)
    if ts is None:
        ts = entry_ms(entry_id)
        if ts > now_ms + max_future_ms:
            return Invalid(
                entry_id,
                Reason.FUTURE_TS,
                f"the entry id's time {ts} is {ts - now_ms} ms ahead of the clock ({now_ms}) "
                "and the entry has no ts: give ts, or let the server choose ids",
            )
    return Event(entry_id, cid, gender, ts)
