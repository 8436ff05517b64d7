"""genderd.evaluation's core: statistics, session gap, labels, history buckets, the majority
baseline, refusals (SPEC §11). The predictions themselves are checked against the real pipeline
in test_evaluation_pipeline.py."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import pytest

from genderd.clock import MS_PER_DAY
from genderd.deployment import Deployment
from genderd.evaluation import (
    HISTORY_BUCKETS,
    MAJORITY,
    NotEvaluable,
    evaluate,
    predictions,
    render,
)
from genderd.evaluation.stats import (
    binomial_interval,
    clustered_interval,
    holm,
    paired_difference,
    t_quantile,
    t_two_sided_p,
)
from genderd.events import Event
from genderd.models.base import Model
from genderd.settings import Settings

GENDERS = ("female", "kids", "male")
T0 = 20_000 * MS_PER_DAY
MINUTE = 60_000


def ev(cid: str, gender: str, ts: int, seq: int = 0) -> Event:
    return Event(f"{ts}-{seq}", cid, gender, ts)


def models(*names: str) -> list[Model]:
    deployment = Deployment.build(Settings(genders=",".join(GENDERS)))
    return [deployment.model(name) for name in names]


# -- statistics --------------------------------------------------------------------------------
def test_clustered_interval_is_wider_than_binomial_for_correlated_clients() -> None:
    rnd = random.Random(7)
    # 200 clients of 20 events each; a client is right on all its events or on none
    correct = [20 if rnd.random() < 0.6 else 0 for _ in range(200)]
    events = [20] * 200
    clustered = clustered_interval(correct, events)
    naive = binomial_interval(sum(correct), sum(events))
    assert clustered is not None and naive is not None
    assert clustered.high - clustered.low > 3 * (naive.high - naive.low)
    assert clustered.low < sum(correct) / sum(events) < clustered.high

    # independent events: about the same width
    correct = [sum(rnd.random() < 0.6 for _ in range(20)) for _ in range(200)]
    clustered = clustered_interval(correct, events)
    naive = binomial_interval(sum(correct), sum(events))
    assert clustered is not None and naive is not None
    ratio = (clustered.high - clustered.low) / (naive.high - naive.low)
    assert 0.8 < ratio < 1.25


def test_interval_edges() -> None:
    assert clustered_interval([], []) is None
    assert clustered_interval([3], [5]) == clustered_interval([3, 0], [5, 0])  # one cluster
    one = clustered_interval([3], [5])
    assert one is not None and (one.low, one.high) == (0.0, 1.0)


def _simulate(rnd: random.Random, edge: float) -> tuple[list[int], list[int], list[int]]:
    """Per client (correlated: each client has its own skill): correct events of a model that
    is right with probability skill + edge, and of the best with skill; events per client."""
    a, b, n = [], [], []
    for _ in range(300):
        events = rnd.randint(1, 30)
        skill = rnd.uniform(0.3, 0.8)
        a.append(sum(rnd.random() < skill + edge for _ in range(events)))
        b.append(sum(rnd.random() < skill for _ in range(events)))
        n.append(events)
    return a, b, n


def test_paired_comparison_finds_a_real_difference_and_not_a_null_one() -> None:
    rnd = random.Random(18)
    a, b, n = _simulate(rnd, -0.08)
    paired = paired_difference(a, b, n)
    assert paired.difference < 0 and paired.p_value < 0.001
    assert paired.interval.low < paired.difference < paired.interval.high < 0
    assert paired.clusters == 300

    nulls = [paired_difference(*_simulate(rnd, 0.0)).p_value for _ in range(20)]
    assert sum(p < 0.05 for p in nulls) <= 3  # about 5% false alarms
    empty = paired_difference([], [], [])
    assert (empty.difference, empty.p_value, empty.clusters) == (0.0, 1.0, 0)


# -- evaluate ----------------------------------------------------------------------------------
def test_majority_baseline_uses_earlier_events_only_ties_to_the_smallest_name() -> None:
    events = [
        ev("a", "male", T0),  # no prediction
        ev("b", "female", T0 + 1),  # male (1) -> wrong
        ev("c", "female", T0 + 2),  # female 1, male 1: tie -> female -> right
        ev("d", "male", T0 + 3),  # female 2 -> wrong
    ]
    got = [answers[MAJORITY][0] for _, answers in predictions(events, [])]
    assert got == [None, "male", "female", "female"]
    report = evaluate(events, [], genders=GENDERS)
    majority = report.model(MAJORITY)
    assert (majority.events, majority.predicted, majority.accuracy_all) == (4, 3, 0.25)
    assert report.best is None and [m.model for m in report.models] == [MAJORITY]


def test_events_in_event_time_order_and_history_buckets() -> None:
    # one client with 25 events given backwards; "last" then predicts the previous gender
    genders = ["female", "male"] * 12 + ["female"]
    events = [ev("c", g, T0 + n * MINUTE) for n, g in enumerate(genders)][::-1]
    report = evaluate(events, models("last", "top"), genders=GENDERS)
    last = report.model("last")
    assert [b.history for b in last.by_history] == list(HISTORY_BUCKETS)
    assert [b.events for b in last.by_history] == [1, 1, 3, 15, 5]
    assert [b.predicted for b in last.by_history] == [0, 1, 3, 15, 5]
    assert last.accuracy == 0.0  # alternating: the previous gender is always wrong
    assert last.coverage == 24 / 25
    assert (report.events, report.clients, report.first_ts) == (25, 1, T0)
    # top is always wrong too (a tie goes to the newest event): equals go to the first name
    assert report.model("top").accuracy_all == 0.0
    assert report.best == "last" and last.versus_best is None
    versus = report.model("top").versus_best
    assert versus is not None and (versus.best, versus.difference, versus.p_value) == ("last", 0, 1)


def test_ties_in_ts_go_by_entry_id() -> None:
    events = [ev("c", "male", T0, seq=2), ev("c", "female", T0, seq=10), ev("c", "kids", T0 + 1)]
    (_, first), (_, second), (_, third) = predictions(events, models("last"))
    assert (first["last"][0], second["last"][0], third["last"][0]) == (None, "male", "female")


def test_session_gap_scores_first_events_of_sessions_but_applies_all() -> None:
    gap = 30 * MINUTE
    events = [
        ev("c", "male", T0),
        ev("c", "male", T0 + MINUTE),  # same session: not scored
        ev("c", "female", T0 + 2 * MINUTE),  # not scored
        ev("c", "female", T0 + 2 * MINUTE + gap + 1),  # new session: scored, last = female
        ev("d", "kids", T0 + 5),
    ]
    scored = list(predictions(events, models("last"), session_gap_ms=gap))
    assert [(e.cid, e.ts) for e, _ in scored] == [("c", T0), ("d", T0 + 5), ("c", events[3].ts)]
    assert scored[2][1]["last"][0] == "female"
    report = evaluate(events, models("last"), genders=GENDERS, session_gap_ms=gap)
    assert report.events == 5 and report.model("last").events == 3
    assert report.model("last").accuracy == 1.0
    assert report.model("last").by_history[2].events == 1  # 3 earlier events: 2-4


def test_labels_scored_at_the_end_of_the_history() -> None:
    day = MS_PER_DAY
    events = [
        ev("a", "female", T0),
        ev("a", "female", T0 + 1),
        ev("b", "male", T0),
        ev("c", "kids", T0 + 10 * day),  # the last event: read time T0 + 10 days
    ]
    labels = {"a": "female", "b": "female", "c": "kids", "nobody": "male"}
    report = evaluate(events, models("top", "top7d"), genders=GENDERS, labels=labels)
    assert report.labels is not None and report.labels_unknown == 1
    by_model = {score.model: score for score in report.labels}
    top = by_model["top"]
    assert (top.clients, top.answered, top.accuracy) == (3, 3, 2 / 3)
    assert top.confusion == {"female": {"female": 1, "male": 1}, "kids": {"kids": 1}}
    window = by_model["top7d"]  # a and b left the window by then
    assert (window.answered, window.coverage, window.accuracy) == (1, 1 / 3, 1.0)
    assert window.confusion["female"] == {"none": 2}
    assert evaluate(events, models("top"), genders=GENDERS).labels is None


def test_window_at_read_time_and_log_loss() -> None:
    events = [ev("c", "female", T0), ev("c", "male", T0 + 7 * MS_PER_DAY)]
    (_, _), (_, second) = predictions(events, models("top7d", "top"))
    assert second["top7d"] == (None, None)  # day D-7 is out of the window
    assert second["top"] == ("female", {"female": 1})
    report = evaluate(events, models("top", "last"), genders=GENDERS)
    # p(male) = (0 + 0.5) / (1 + 0.5 * 3)
    assert report.model("top").log_loss == pytest.approx(-math.log(0.2))
    assert report.model("last").log_loss is None


class LuaOnly(Model):
    name = "luaonly"
    description = "a model with its own Lua"
    apply_files = ("last.lua",)

    def client_keys(self, shard: int, cid: str, events: Sequence[Event], now_ms: int) -> list[str]:
        return []


def test_a_lua_model_without_a_predictor_is_refused_with_its_reason() -> None:
    settings = Settings(genders=",".join(GENDERS))
    lua = LuaOnly(settings, Deployment.build(settings).keys)
    with pytest.raises(NotEvaluable, match=r"'luaonly'.*Lua-backed.*predictor\(\)"):
        lua.predictor()
    report = evaluate([ev("c", "male", T0)], [*models("last"), lua], genders=GENDERS)
    assert "Lua-backed" in report.refused["luaonly"]
    assert [m.model for m in report.models] == [MAJORITY, "last"]
    with pytest.raises(NotEvaluable):
        list(predictions([ev("c", "male", T0)], [lua]))


def test_report_to_dict_and_empty_input() -> None:
    report = evaluate([], models("last", "recency"), genders=GENDERS)
    assert report.best is None and report.events == 0 and report.first_ts is None
    data = report.to_dict()
    assert data["models"][1]["model"] == "last" and data["models"][1]["accuracy"] is None
    assert data["models"][1]["by_history"][0] == {
        "history": "0",
        "events": 0,
        "predicted": 0,
        "accuracy": None,
        "accuracy_all": None,
        "accuracy_interval": None,
        "accuracy_all_interval": None,
    }


def test_progress_is_reported() -> None:
    seen: list[tuple[int, int]] = []
    events = [ev(f"c{n % 7}", "male", T0 + n) for n in range(25_000)]
    evaluate(events, models("last"), genders=GENDERS, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(10_000, 25_000), (20_000, 25_000), (25_000, 25_000)]


def test_a_python_models_failing_event_leaves_its_stored_answer() -> None:
    settings = Settings(genders=",".join(GENDERS), plugins=("tests.support.pymodels:Picky",))
    picky = Deployment.build(settings).model("picky")
    events = [ev("x", "female", T0), ev("x", "kids", T0 + 1), ev("x", "male", T0 + 2)]
    got = [
        answers["picky"] for _, answers in predictions([*events, ev("x", "male", T0 + 3)], [picky])
    ]
    assert got == [(None, None), ("female", None), ("female", None), ("male", None)]


def test_a_row_ahead_of_the_best_is_never_marked_behind() -> None:
    # every client alternates departments: `last` is always wrong, the baseline often right
    events = [
        ev(f"c{n}", ("female", "male")[k % 2], T0 + 1000 * (40 * n + k))
        for n in range(60)
        for k in range(40)
    ]
    report = evaluate(events, models("last"), genders=GENDERS)
    assert report.best == "last" and report.model("last").accuracy_all == 0
    versus = report.model(MAJORITY).versus_best
    assert versus is not None and versus.difference > 0.4 and versus.p_value < 0.001
    assert not versus.significant
    assert "! majority (the baseline) is significantly ahead of last" in render.table(report)


@pytest.mark.parametrize(
    ("df", "quantile"),
    [(1, 12.7062), (2, 4.3027), (5, 2.5706), (9, 2.2622), (29, 2.0452), (120, 1.9799)],
)
def test_student_t_quantiles_match_the_tables(df: int, quantile: float) -> None:
    assert t_quantile(0.05, df) == pytest.approx(quantile, abs=1e-4)
    assert t_two_sided_p(quantile, df) == pytest.approx(0.05, abs=1e-5)
    assert t_quantile(0.05, 10**7) == pytest.approx(1.95996, abs=1e-5)  # the normal's


def test_holm_adjusts_in_steps_and_stays_monotone() -> None:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([]) == [] and holm([0.2]) == [0.2] and holm([0.6, 0.7]) == [1.0, 1.0]


def test_few_clients_widen_the_interval() -> None:
    # the same events per client: ten clients' interval is wider than 1.96 standard errors
    correct, events = [3, 5, 2, 4, 5, 1, 3, 4, 2, 5], [5] * 10
    interval = clustered_interval(correct, events)
    assert interval is not None
    width_t = interval.high - interval.low
    wider = clustered_interval(correct * 30, events * 30)
    assert wider is not None and width_t > 2.26 / 1.96 * 0.99 * (wider.high - wider.low) * 30**0.5
