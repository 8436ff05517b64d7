"""Tests of model `first` in plain pytest, with genderd.testing: a Lua-backed model runs
through the real pipeline on a throw-away server that genderd starts from its bundled binary.
"""

from __future__ import annotations

import random

from genderd.clock import wall_clock_ms
from genderd.deployment import Deployment
from genderd.events import Event
from genderd.settings import Settings
from genderd.testing import run_model

from genderd_first import First

NOW = wall_clock_ms()
MINUTE = 60_000


def test_the_answer_is_the_first_visit_whatever_order_the_events_come_in() -> None:
    views = [
        {"cid": "C1", "gender": "male", "ts": NOW - 2 * MINUTE},
        {"cid": "C1", "gender": "female", "ts": NOW - 3 * MINUTE},  # the first visit
        {"cid": "C1", "gender": "male", "ts": NOW - MINUTE},
        {"cid": "C2", "gender": "male", "ts": NOW - MINUTE},
    ]
    answers = run_model(First, views, now_ms=NOW)
    assert answers["C1"] is not None and answers["C2"] is not None
    assert answers["C1"].gender == "female"
    # last_event_ts is the script's first:ts field: the newest event's time
    assert answers["C1"].last_event_ts == NOW - MINUTE
    assert answers["C1"].scores is None  # the script writes no first:s
    assert answers["C2"].gender == "male"


def test_the_predictor_says_what_the_pipeline_answers() -> None:
    """`genderd evaluate` scores the model with its predictor(): it must agree with the Lua."""
    rand = random.Random(28)
    views = [
        {
            "cid": f"C{rand.randint(1, 20)}",
            "gender": rand.choice(["female", "male"]),
            "ts": NOW - rand.randint(0, 10_000) * MINUTE,
        }
        for _ in range(300)
    ]
    answers = run_model(First, views, now_ms=NOW)
    model = Deployment.build(Settings(plugins=("genderd_first:First",))).model("first")
    predictor = model.predictor()
    ordered = sorted(enumerate(views), key=lambda nv: (nv[1]["ts"], nv[0]))
    states: dict[str, list[str | None]] = {}
    for n, view in ordered:
        event = Event(f"{view['ts']}-{n}", view["cid"], view["gender"], view["ts"])
        predictor.apply(states.setdefault(view["cid"], predictor.new()), event)
    for cid, state in states.items():
        answer = answers[cid]
        assert answer is not None
        assert predictor.predict(state, NOW) == (answer.gender, None), cid
