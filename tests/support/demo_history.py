"""The demo's seeded history (`genderd up --demo`) and the examples the docs show of it.

The docs' lookups of demo clients are real runs of `genderd up --demo --rate 0` (the history
alone). The history is anchored at the start of the UTC day it is written, so its events are
the same on every machine, shifted by whole days: every model's gender and scores are the
same, and every timestamp is the same time of day. These helpers compute the answers the
service gives on the day the history is written, with the models' Python references (the
predictors `genderd evaluate` uses), and read the examples out of the docs.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from genderd.clock import MS_PER_DAY
from genderd.deployment import Deployment
from genderd.events import Event
from genderd.producer import synthetic
from genderd.settings import Settings
from genderd.up import DEMO_CLIENTS, DEMO_HISTORY_DAYS, DEMO_HISTORY_EVENTS, DEMO_SEED

MODELS = ("last", "recency", "top", "top7d")


@dataclass(frozen=True)
class Shown:
    """One model's answer as `genderd lookup` prints it (or the API serves it)."""

    gender: str
    scores: dict[str, Any] | None
    last_event_ts: int


def demo_events(anchor_ms: int, seed: int = DEMO_SEED) -> list[Event]:
    """The events `genderd up --demo` writes on the day starting at ``anchor_ms``."""
    events = synthetic(
        DEMO_HISTORY_EVENTS,
        DEMO_CLIENTS,
        Settings().genders,
        days=DEMO_HISTORY_DAYS,
        seed=seed,
        anchor_ms=anchor_ms,
    )
    return [Event(f"{e['ts']}-{n}", e["cid"], e["gender"], e["ts"]) for n, e in enumerate(events)]


def demo_answers(cids: set[str], anchor_ms: int) -> dict[str, dict[str, Shown]]:
    """Every model's answer for each of ``cids`` on the day the history is written (read at
    noon of the day starting at ``anchor_ms``), as the service serves it."""
    deployment = Deployment.build(Settings(redis_url="redis://unused.invalid"))
    predictors = {name: deployment.model(name).predictor() for name in MODELS}
    per_client: dict[str, list[Event]] = defaultdict(list)
    for event in demo_events(anchor_ms):
        if event.cid in cids:
            per_client[event.cid].append(event)
    read_at = anchor_ms + MS_PER_DAY // 2
    answers: dict[str, dict[str, Shown]] = {}
    for cid, events in per_client.items():
        events.sort(key=lambda e: (e.ts, int(e.id.split("-")[1])))
        answers[cid] = {}
        for name, predictor in predictors.items():
            state = predictor.new()
            for event in events:
                predictor.apply(state, event)
            gender, scores = predictor.predict(state, read_at)
            assert gender is not None, (cid, name)
            answers[cid][name] = Shown(gender, scores and dict(scores), events[-1].ts)
    return answers


_LOOKUP = re.compile(r"^\$ genderd lookup (C\d+)\b")
_LINE = re.compile(r"^(\w+)\s+(\w+)(?:\s+scores (\{.*\}))?\s+last_event_ts (\d+)$")
_CURL = re.compile(r'^\{"cid":"C\d+","models?":.*\}$')


def shown_lookups(markdown: str) -> dict[str, dict[str, Shown]]:
    """The answers of each ``$ genderd lookup CID`` example of a page (the lines after it
    that name a model), and of each answer the API printed (``{"cid": ...}``)."""
    shown: dict[str, dict[str, Shown]] = defaultdict(dict)
    cid: str | None = None
    for line in markdown.splitlines():
        line = line.strip()
        started = _LOOKUP.match(line)
        if started:
            cid = started.group(1)
            continue
        row = _LINE.match(line)
        if cid is not None and row is not None:
            model, gender, scores, ts = row.groups()
            shown[cid][model] = Shown(gender, scores and json.loads(scores), int(ts))
            continue
        cid = None
        if _CURL.match(line):
            served = json.loads(line)
            answers = served.get("models") or {served["model"]: served}
            for model, answer in answers.items():
                shown[served["cid"]][model] = Shown(
                    answer["gender"], answer["scores"], answer["last_event_ts"]
                )
    return dict(shown)
