"""The order an evaluation applies events in, and which events it applies and scores (SPEC §11):
arrival order's predictors against the rules of SPEC §3 one late event at a time, both orders
agreeing on a history that arrived in time order, the warm-up, the maximum delay, chunks, and
the compact buffer of time order. The live workers' answers are in
test_evaluation_arrival_pipeline.py."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genderd.clock import MS_PER_DAY
from genderd.deployment import Deployment
from genderd.errors import InputError
from genderd.evaluation import (
    ARRIVAL,
    MAJORITY,
    TIME,
    Evaluation,
    Selection,
    evaluate,
    predictions,
)
from genderd.evaluation.buffer import EventBuffer
from genderd.evaluation.predictors import (
    ArrivalWindowPredictor,
    LastPredictor,
    TopPredictor,
)
from genderd.evaluation.prequential import Prequential, event_order
from genderd.events import Event
from genderd.models.base import Model
from genderd.settings import Settings

GENDERS = ("female", "kids", "male")
T0 = 20_000 * MS_PER_DAY
HOUR = 3_600_000


def ev(cid: str, gender: str, ts: int, arrival: int | None = None, seq: int = 0) -> Event:
    return Event(f"{ts if arrival is None else arrival}-{seq}", cid, gender, ts)


def models(*names: str) -> list[Model]:
    deployment = Deployment.build(
        Settings(genders=",".join(GENDERS), plugins=("tests.support.pymodels:Streak",))
    )
    return [deployment.model(name) for name in names]


def answers(events: list[Event], name: str, order: str = ARRIVAL) -> list[str | None]:
    return [found[name][0] for _, found in predictions(events, models(name), order=order)]


# -- each predictor in arrival order -----------------------------------------------------------
def test_last_keeps_the_greatest_ts_and_id_whatever_arrives_later() -> None:
    events = [
        ev("c", "male", T0 + 10, arrival=T0 + 10),
        ev("c", "female", T0 + 5, arrival=T0 + 11),  # late: last stays male
        ev("c", "kids", T0 + 10, arrival=T0 + 12),  # same ts, greater id: kids
        ev("c", "male", T0 + 10, arrival=T0 + 9, seq=5),  # same ts, smaller id (9-5): not it
        ev("c", "female", T0 + 11, arrival=T0 + 13),
    ]
    assert answers(events, "last") == [None, "male", "male", "kids", "kids"]
    arrival = LastPredictor().arrival()
    state = arrival.new()
    for event in events:
        arrival.apply(state, event)
    assert state[0] == "female"
    assert answers(events, "last", TIME) == [None, "female", "male", "male", "kids"]


def test_top_ties_go_to_the_newest_ts_not_the_latest_applied() -> None:
    events = [
        ev("c", "male", T0 + 50, arrival=T0 + 50),
        ev("c", "female", T0 + 10, arrival=T0 + 60),  # 1-1: male's event is the newer
        ev("c", "male", T0 + 5, arrival=T0 + 70),  # male 2-1
        ev("c", "female", T0 + 40, arrival=T0 + 80),  # 2-2: male's newest (50) is newer
        ev("c", "kids", T0 + 90, arrival=T0 + 90),
    ]
    assert answers(events, "top") == [None, "male", "male", "male", "male"]
    arrival = TopPredictor().arrival()
    state = arrival.new()
    for event in events[:4]:
        arrival.apply(state, event)
    assert arrival.predict(state, T0) == ("male", {"male": 2, "female": 2})
    # time order's predictor takes the latest applied as the newest: not for late events
    state = TopPredictor().new()
    for event in events[:4]:
        TopPredictor().apply(state, event)
    assert TopPredictor().predict(state, T0)[0] == "female"


def test_a_window_read_sums_the_days_up_to_the_events_day_that_have_not_expired() -> None:
    window = ArrivalWindowPredictor(3)
    state = window.new()
    day = T0 // MS_PER_DAY * MS_PER_DAY
    window.apply(state, ev("c", "male", day + 2 * MS_PER_DAY, arrival=day + 2 * MS_PER_DAY))
    window.apply(state, ev("c", "female", day, arrival=day + 2 * MS_PER_DAY + 1))
    # a read on day 0 does not see day 2 (an event with a greater ts, applied earlier)
    window.clock(state, day + 2 * MS_PER_DAY + 2)
    assert window.predict(state, day + 1) == ("female", {"female": 1})
    assert window.predict(state, day + 2 * MS_PER_DAY) == (
        "male",
        {"male": 1, "female": 1},  # a tie: male's event is the newest
    )
    # by day 3, day 0's bucket has expired: not in a read at day 2, whatever the read time
    window.clock(state, day + 3 * MS_PER_DAY)
    assert window.predict(state, day + 2 * MS_PER_DAY) == ("male", {"male": 1})
    # processed on day 5, an event of day 2 is older than the window: not counted
    window.apply(state, ev("c", "kids", day + 2 * MS_PER_DAY, arrival=day + 5 * MS_PER_DAY))
    assert window.predict(state, day + 5 * MS_PER_DAY) == (None, None)
    assert state[1:] == []  # every bucket expired by then: dropped


def test_a_python_model_runs_in_arrival_order() -> None:
    events = [
        ev("c", "male", T0 + 1, arrival=T0 + 1),
        ev("c", "male", T0 + 2, arrival=T0 + 2),
        ev("c", "female", T0 + 3, arrival=T0 + 3),
        ev("c", "male", T0 - 1, arrival=T0 + 4),  # late: in time order it came first
        ev("c", "kids", T0 + 5, arrival=T0 + 5),
    ]
    # streak: the gender of the current run of 3 same-gender events, once there is one
    assert answers(events, "streak") == [None, None, None, None, None]
    assert answers(events, "streak", TIME) == [None, None, None, "male", "male"]


# -- both orders -------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.sampled_from(GENDERS),
            st.integers(0, 12 * 24),  # hours
        ),
        max_size=60,
    )
)
def test_on_a_history_that_arrived_in_time_order_both_orders_agree(
    raw: list[tuple[str, str, int]],
) -> None:
    events = [
        ev(cid, gender, T0 + hours * HOUR, seq=n)
        for n, (cid, gender, hours) in enumerate(sorted(raw, key=lambda e: e[2]))
    ]
    names = ("last", "top", "top7d", "recency", "streak")
    by_time = evaluate(events, models(*names), genders=GENDERS, order=TIME)
    by_arrival = evaluate(events, models(*names), genders=GENDERS, order=ARRIVAL)
    assert by_arrival.order == ARRIVAL
    assert by_arrival.models == by_time.models
    assert list(predictions(events, models(*names), order=ARRIVAL)) == list(
        predictions(events, models(*names), order=TIME)
    )


def test_arrival_order_fed_in_chunks_equals_one_feed() -> None:
    rnd = random.Random(5)
    events = [
        ev(f"c{rnd.randrange(20)}", rnd.choice(GENDERS), T0 + rnd.randrange(10 * HOUR), T0 + n)
        for n in range(500)
    ]
    whole = evaluate(events, models("last", "top7d"), genders=GENDERS, order=ARRIVAL)
    chunked = Evaluation(models("last", "top7d"), genders=GENDERS, order=ARRIVAL)
    for start in range(0, len(events), 37):
        chunked.feed(events[start : start + 37])
    assert chunked.report() == whole


# -- what is applied and scored ----------------------------------------------------------------
def test_warmup_applies_the_history_before_since_without_scoring_it() -> None:
    events = [ev("c", "male", T0), ev("c", "male", T0 + 1), ev("c", "female", T0 + 10)]
    since = T0 + 5
    cold = list(predictions(events, models("top"), selection=Selection(since_ms=since)))
    warm = list(
        predictions(events, models("top"), selection=Selection(since_ms=since, warmup=True))
    )
    assert [(e.ts, found["top"][0]) for e, found in cold] == [(T0 + 10, None)]  # no history
    assert [(e.ts, found["top"][0]) for e, found in warm] == [(T0 + 10, "male")]
    report = evaluate(
        events, models("top"), genders=GENDERS, selection=Selection(since_ms=since, warmup=True)
    )
    top = report.model("top")
    assert (report.events, report.warmup_events, top.events, top.predicted) == (3, 2, 1, 1)
    assert top.by_history[2].events == 1  # two earlier events: bucket 2-4
    assert (report.first_ts, report.clients) == (T0, 1)


def test_max_delay_scores_only_events_that_arrived_in_time() -> None:
    events = [
        ev("c", "male", T0, arrival=T0),
        ev("c", "female", T0 + 10, arrival=T0 + 10 + 301_000),  # 301 s late: applied only
        ev("c", "male", T0 + 20, arrival=T0 + 20 + 300_000),  # 300 s: scored, sees female
    ]
    selection = Selection(max_delay_ms=300_000)
    scored = list(predictions(events, models("last"), order=ARRIVAL, selection=selection))
    assert [(e.ts, found["last"][0]) for e, found in scored] == [(T0, None), (T0 + 20, "female")]


def test_a_late_event_does_not_start_a_session() -> None:
    gap = 30 * 60_000
    events = [
        ev("c", "male", T0, arrival=T0),
        ev("c", "male", T0 + 2 * gap, arrival=T0 + 2 * gap),  # a new session
        ev("c", "female", T0 + 1, arrival=T0 + 3 * gap),  # late: before the newest ts
    ]
    scored = predictions(events, models("last"), order=ARRIVAL, session_gap_ms=gap)
    assert [e.ts for e, _ in scored] == [T0, T0 + 2 * gap]


def test_events_said_to_be_in_time_order_are_checked() -> None:
    evaluation = Evaluation(models("last"), genders=GENDERS, presorted=True)
    evaluation.feed([ev("c", "male", T0 + 1)])
    with pytest.raises(InputError, match="not in time order"):
        evaluation.feed([ev("d", "male", T0)])


# -- the buffer of time order ------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 3)),
        max_size=40,
    )
)
def test_the_buffer_replays_in_ts_then_id_order(raw: list[tuple[int, int, int]]) -> None:
    events = [
        ev(f"c{n % 3}", GENDERS[n % 3], ts, arrival=ms, seq=seq)
        for n, (ts, ms, seq) in enumerate(raw)
    ]
    buffer = EventBuffer()
    for event in events:
        buffer.add(event)
    assert len(buffer) == len(events)
    assert list(buffer.replay()) == sorted(events, key=event_order)
    assert len(buffer) == 0


def test_time_order_sorts_and_majority_uses_earlier_events_of_all_clients() -> None:
    events = [ev("b", "female", T0 + 2), ev("a", "male", T0 + 1), ev("c", "male", T0 + 3)]
    run = Prequential([models("last")[0].predictor()], order=TIME)
    assert [e.ts for e, _, _ in run.steps(events)] == [T0 + 1, T0 + 2, T0 + 3]
    got = [found[MAJORITY][0] for _, found in predictions(events, [])]
    assert got == [None, "male", "female"]
