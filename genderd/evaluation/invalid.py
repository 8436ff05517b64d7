"""Telling a user that much of the input was invalid, why, and what would admit it.

An evaluation skips invalid events (and counts them in its footer), which is right for a few bad
lines and wrong when a setting does not match the data: with the default genders, a history
holding ``kids`` pages loses a third of its events to ``unknown_gender`` and the figures
describe another shop. :func:`invalid_warning` makes that one line on stderr.
"""

from __future__ import annotations

from genderd.evaluation.inputs import MALFORMED, InputSummary
from genderd.events import CID_MAX_CHARS, TS_MAX_DIGITS, Reason
from genderd.settings import Settings

#: above this share of invalid events (of those read), the evaluation warns
INVALID_WARNING_SHARE = 0.01
#: unknown genders named in the warning
GENDERS_NAMED = 5


def _unknown_gender(summary: InputSummary, settings: Settings) -> str:
    seen = sorted(summary.unknown_genders, key=lambda g: (-summary.unknown_genders[g], g))
    seen = [gender for gender in seen if gender]
    if not seen:
        return "their gender is empty or not UTF-8: fix the producer"
    named = ", ".join(repr(gender) for gender in seen[:GENDERS_NAMED])
    admitted = ",".join([*settings.genders, *seen[:GENDERS_NAMED]])
    which = f"gender {named} is" if len(seen) == 1 else f"genders {named} are"
    return f"{which} not configured: GENDERD_GENDERS={admitted} would admit them"


def _advice(reason: str, summary: InputSummary, settings: Settings) -> str:
    """What would admit (or fix) the events invalid for ``reason``."""
    if reason == Reason.UNKNOWN_GENDER.value:
        return _unknown_gender(summary, settings)
    fixed = {
        Reason.FUTURE_TS.value: (
            f"their time is more than GENDERD_MAX_FUTURE_MS ({settings.max_future_ms:,} ms) "
            "ahead of the clock: raise it, or fix the producers' clocks (ts is milliseconds "
            "since the epoch, not seconds or microseconds)"
        ),
        Reason.WRONG_SHARD.value: (
            f"they were written to another shard's stream than crc32(cid) mod "
            f"{settings.shards} (GENDERD_SHARDS): fix the producer's shard rule, then "
            "`genderd dead redrive`"
        ),
        Reason.BAD_TS.value: (
            f"ts must be 1-{TS_MAX_DIGITS} ASCII digits of milliseconds since the epoch "
            "(no sign, decimals or date text)"
        ),
        Reason.MISSING_CID.value: "each event needs a cid",
        Reason.BAD_CID.value: (
            f"a cid has 1-{CID_MAX_CHARS} characters, no whitespace or control characters"
        ),
        Reason.MISSING_GENDER.value: "each event needs a gender",
        Reason.DUPLICATE_FIELD.value: "an entry names a field twice: fix the producer",
        MALFORMED: (
            'lines must be JSON objects ({"cid", "gender", "ts"}) or CSV rows cid,gender[,ts]'
        ),
    }
    return fixed.get(reason, "see `genderd dead` for the entries' details")


def invalid_warning(summary: InputSummary, settings: Settings) -> str | None:
    """One line when more than :data:`INVALID_WARNING_SHARE` of what was read is invalid:
    the share, the top reason and the setting (or fix) that would admit those events; None
    otherwise."""
    if not summary.read or summary.invalid <= INVALID_WARNING_SHARE * summary.read:
        return None
    reason, count = max(summary.reasons.items(), key=lambda item: (item[1], item[0]))
    return (
        f"warning: {summary.invalid:,} of {summary.read:,} events "
        f"({100 * summary.invalid / summary.read:.1f}%) are invalid and not evaluated; "
        f"{count:,} {reason}: {_advice(reason, summary, settings)}"
    )


__all__ = ["INVALID_WARNING_SHARE", "invalid_warning"]
