"""The docs' examples are real (issue 28).

The README's lookups (and those of the other pages that show the demo's clients) are what the
seeded history gives on every machine; docs/lua-models.md shows the example package's files as
they are.

The history of `genderd up --demo` is anchored at the start of the UTC day it is written, so
the answers on that day are the same whatever the day: the same genders and scores, and
timestamps that differ by whole days. Computed here with the models' Python references (the
predictors `genderd evaluate` uses, checked against the Lua models by their own tests); the
end-to-end run is in tests/test_e2e_up.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from genderd.clock import MS_PER_DAY
from genderd.producer import day_start
from genderd.up import DEMO_HISTORY_EVENTS

from .support.demo_history import MODELS, demo_answers, demo_events, shown_lookups

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_FILES = {
    "examples/lua-model/genderd_first/model.py": "python",
    "examples/lua-model/genderd_first/first.lua": "lua",
    "examples/lua-model/pyproject.toml": "toml",
}
PAGES = ("README.md", "docs/index.md", "docs/getting-started.md", "docs/running.md")
DAY = day_start(1_800_000_000_000)  # any day: the answers are the same on every one
# model, applied; the live accuracy is "-": the history's events arrived long after their time
_STATUS_ROW = re.compile(r"^(\w+)\s+all\s+\d+\s+\d+\s+\d+\s+([\d,]+)\s+-\s+ok$", re.MULTILINE)


@pytest.mark.parametrize("page", PAGES)
def test_the_pages_lookups_of_demo_clients_are_what_the_seeded_history_gives(page: str) -> None:
    shown = shown_lookups((ROOT / page).read_text())
    assert shown, f"{page} shows no lookup of a demo client"
    answers = demo_answers(set(shown), DAY)
    for cid, models in shown.items():
        for model, answer in models.items():
            served = answers[cid][model]
            assert (answer.gender, answer.scores) == (served.gender, served.scores), (cid, model)
            # the same time of day: the history moved by whole days since the page's run
            assert answer.last_event_ts % MS_PER_DAY == served.last_event_ts % MS_PER_DAY


def test_the_readme_shows_a_loyal_and_a_drifting_shopper_as_it_says() -> None:
    shown = shown_lookups((ROOT / "README.md").read_text())
    loyal, drifting = shown["C42"], shown["C15"]
    assert set(loyal) == set(drifting) == set(MODELS)
    assert {answer.gender for answer in loyal.values()} == {"male"}
    top, top7d = loyal["top"].scores or {}, loyal["top7d"].scores or {}
    assert sum(top7d.values()) < sum(top.values())  # part of the history is older than 7 days
    assert drifting["top"].gender == "male"
    assert {drifting[m].gender for m in ("last", "recency", "top7d")} == {"female"}


def test_the_readme_status_is_the_history_alone() -> None:
    rows = dict(_STATUS_ROW.findall((ROOT / "README.md").read_text()))
    assert set(rows) == set(MODELS)
    assert {int(applied.replace(",", "")) for applied in rows.values()} == {DEMO_HISTORY_EVENTS}


def test_the_history_is_the_same_whatever_the_day_it_is_written() -> None:
    first = demo_events(DAY)
    later = demo_events(DAY + 9 * MS_PER_DAY)
    assert len(first) == DEMO_HISTORY_EVENTS
    assert all(e.ts < DAY for e in first)
    shifted = [(e.cid, e.gender, e.ts + 9 * MS_PER_DAY) for e in first]
    assert shifted == [(e.cid, e.gender, e.ts) for e in later]


@pytest.mark.parametrize(("path", "language"), EXAMPLE_FILES.items())
def test_lua_models_md_shows_the_example_packages_files_whole(path: str, language: str) -> None:
    shown = (ROOT / "docs" / "lua-models.md").read_text()
    assert f"```{language}\n{(ROOT / path).read_text()}```" in shown, path
