"""Validation of events (SPEC §2): every rule and its reason code."""

from __future__ import annotations

import pytest

from genderd.events import (
    Event,
    EventError,
    Invalid,
    Reason,
    check_event,
    cid_problem,
    parse_entry,
)
from genderd.keys import Keys, shard_of

GENDERS = ("female", "male")
NOW = 1_800_000_000_000
FUTURE = 300_000


def reason(fields: dict[bytes, bytes], now: int = NOW) -> Reason | None:
    parsed = parse_entry(f"{NOW}-0", fields, GENDERS, now, FUTURE)
    return parsed.reason if isinstance(parsed, Invalid) else None


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({b"gender": b"male"}, Reason.MISSING_CID),
        ({b"cid": b"", b"gender": b"male"}, Reason.BAD_CID),
        ({b"cid": b"a b", b"gender": b"male"}, Reason.BAD_CID),
        ({b"cid": b"a\tb", b"gender": b"male"}, Reason.BAD_CID),
        ({b"cid": b"a\x00b", b"gender": b"male"}, Reason.BAD_CID),
        ({b"cid": b"a\x7fb", b"gender": b"male"}, Reason.BAD_CID),
        ({b"cid": b"\xff\xfe", b"gender": b"male"}, Reason.BAD_CID),
        ({b"cid": b"x" * 129, b"gender": b"male"}, Reason.BAD_CID),
        ({b"cid": b"x" * 10_240, b"gender": b"male"}, Reason.BAD_CID),
        ({b"cid": b"C1"}, Reason.MISSING_GENDER),
        ({b"cid": b"C1", b"gender": b"kids"}, Reason.UNKNOWN_GENDER),
        ({b"cid": b"C1", b"gender": b""}, Reason.UNKNOWN_GENDER),
        ({b"cid": b"C1", b"gender": b"male", b"ts": b"soon"}, Reason.BAD_TS),
        ({b"cid": b"C1", b"gender": b"male", b"ts": b"1.5"}, Reason.BAD_TS),
        ({b"cid": b"C1", b"gender": b"male", b"ts": b"-5"}, Reason.BAD_TS),
        ({b"cid": b"C1", b"gender": b"male", b"ts": b""}, Reason.BAD_TS),
        ({b"cid": b"C1", b"gender": b"male", b"ts": b"1" * 16}, Reason.BAD_TS),
        (
            {b"cid": b"C1", b"gender": b"male", b"ts": str(NOW + FUTURE + 1).encode()},
            Reason.FUTURE_TS,
        ),
    ],
)
def test_bad_entries_have_their_reason(fields: dict[bytes, bytes], expected: Reason) -> None:
    assert reason(fields) is expected


def test_valid_entry_is_normalised() -> None:
    parsed = parse_entry(
        "1700000000000-3",
        {b"cid": "Ω-7".encode(), b"gender": b"  FeMale ", b"extra": b"ignored"},
        GENDERS,
        NOW,
        FUTURE,
    )
    assert parsed == Event("1700000000000-3", "Ω-7", "female", 1700000000000)


def test_ts_is_taken_when_given_and_may_be_up_to_max_future_ahead() -> None:
    fields = {b"cid": b"C1", b"gender": b"male", b"ts": str(NOW + FUTURE).encode()}
    parsed = parse_entry("1-0", fields, GENDERS, NOW, FUTURE)
    assert isinstance(parsed, Event) and parsed.ts == NOW + FUTURE


def test_128_characters_are_allowed() -> None:
    assert reason({b"cid": ("é" * 128).encode(), b"gender": b"male"}) is None


def test_check_event_raises_with_the_reason() -> None:
    with pytest.raises(EventError) as caught:
        check_event({"cid": "C1", "gender": "robot"}, GENDERS, NOW, FUTURE)
    assert caught.value.reason is Reason.UNKNOWN_GENDER
    assert check_event({"cid": "C1", "gender": "Male", "ts": 5}, GENDERS, NOW, FUTURE) == (
        "C1",
        "male",
        5,
    )


def test_shard_rule_is_crc32_of_utf8_mod_shards() -> None:
    import binascii  # an independent CRC-32 implementation

    assert shard_of("C42", 16) == 0xFE6048FC % 16 == 12  # docs/concepts.md's worked example
    for cid in ["C42", "Ω-7", "user:with:colons"]:
        assert shard_of(cid, 16) == binascii.crc32(cid.encode("utf-8")) % 16
    assert (
        Keys("genderd").stream(shard_of("C42", 16)) == f"genderd:{{s{shard_of('C42', 16)}}}:events"
    )


@pytest.mark.parametrize("ts", ["1795700000000\n", "1795700000000\r\n", " 1795700000000", "+1"])
def test_ts_must_be_exactly_digits(ts: str) -> None:
    parsed = parse_entry(
        "1-0", {b"cid": b"C1", b"gender": b"male", b"ts": ts.encode()}, ["male"], 0, 10**18
    )
    assert isinstance(parsed, Invalid) and parsed.reason is Reason.BAD_TS


def test_cid_check_matches_its_definition_for_every_character() -> None:
    """cid_problem's fast path (isprintable, no ASCII space) refuses exactly the whitespace
    and control characters, for every character of the Basic Multilingual Plane."""
    for code in range(0x10000):
        if 0xD800 <= code <= 0xDFFF:  # surrogates are not characters
            continue
        char = chr(code)
        refused = cid_problem(f"a{char}b") is not None
        assert refused == (char.isspace() or not char.isprintable()), hex(code)
