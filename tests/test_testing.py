"""genderd.testing: any model over a list of events, without a server to start by hand; and
every registered model against its independent reference through it."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from genderd.clock import MS_PER_DAY
from genderd.deployment import Deployment
from genderd.events import Event
from genderd.models import PythonModel
from genderd.models.recency import RecencyModel
from genderd.settings import Settings
from genderd.testing import ModelFailure, run_model

from .support import oracle
from .support.pymodels import Count, Picky, Streak
from .support.runtime import tomorrow_noon_ms

HOUR = 3_600_000


def test_the_docs_example_in_process_and_through_the_pipeline() -> None:
    views = [{"cid": "C1", "gender": g} for g in ["male", "female", "female", "female"]]
    assert run_model(Streak, views)["C1"].gender == "female"  # type: ignore[union-attr]
    views = [{"cid": "C1", "gender": "male"}] * 3
    assert run_model(Streak, views, redis=True)["C1"].gender == "male"  # type: ignore[union-attr]
    assert run_model(Streak, views[:2])["C1"] is None  # no streak yet: no answer


def test_a_model_failure_is_raised_unless_told_otherwise() -> None:
    views = [{"cid": "C1", "gender": "kids"}, {"cid": "C1", "gender": "male"}]
    with pytest.raises(ModelFailure, match="no kids here"):
        run_model(Picky, views, genders="female,male,kids")
    # through Redis too, the failure names the event (client and entry id) and the exception
    with pytest.raises(ModelFailure, match=r"^C1 \d+-\d+: .*no kids here") as raised:
        run_model(Picky, views, genders="female,male,kids", redis=True)
    assert "dead-lettered" not in str(raised.value)
    answers = run_model(Picky, views, genders="female,male,kids", strict=False)
    assert answers["C1"].gender == "male"  # type: ignore[union-attr]


def _events(rnd: random.Random, now: int, n: int) -> list[dict[str, object]]:
    return [
        {
            "cid": rnd.choice(["A", "B", "C:d"]),
            "gender": rnd.choice(["female", "male", "kids"]),
            "ts": now - rnd.randint(0, 12 * 24) * HOUR,
        }
        for _ in range(n)
    ]


def _recency_reference(events: list[dict[str, object]], half_life_days: float) -> dict[str, str]:
    """Closed form: per gender, the sum of 2^((ts - newest) / half-life) at the client's
    newest event; the most weight wins, then the newest event, then the name."""
    best = {}
    for cid in {str(e["cid"]) for e in events}:
        mine = [e for e in events if e["cid"] == cid]
        newest = max(int(e["ts"]) for e in mine)  # type: ignore[call-overload]
        weight: dict[str, float] = {}
        last: dict[str, int] = {}
        for e in mine:
            g, ts = str(e["gender"]), int(e["ts"])  # type: ignore[call-overload]
            weight[g] = weight.get(g, 0.0) + 2 ** ((ts - newest) / (half_life_days * MS_PER_DAY))
            last[g] = max(last.get(g, ts), ts)
        best[cid] = min(weight, key=lambda g: (-round(weight[g], 9), -last[g], g))
    return best


@pytest.mark.parametrize("seed", [1, 2])
def test_every_registered_model_answers_like_its_reference(seed: int) -> None:
    """Each model registered by the package (entry points) through genderd.testing on the
    real pipeline; the built-ins against the oracle, recency against its closed form, in any
    order of the events."""
    now = tomorrow_noon_ms()
    rnd = random.Random(seed)
    events = _events(rnd, now, 60)
    shuffled = rnd.sample(events, len(events))
    registry = Deployment.build(Settings()).registry
    assert set(registry.names()) == {"last", "top", "top7d", "recency"}
    for model in registry:
        got = run_model(
            model.defined_by, events, now_ms=now, genders="female,male,kids", redis=True
        )
        for cid in {str(e["cid"]) for e in events}:
            mine = [
                oracle.Ev(f"{e['ts']}-{n}", cid, str(e["gender"]), int(e["ts"]))  # type: ignore[call-overload]
                for n, e in enumerate(events)
                if e["cid"] == cid
            ]
            answer = got[cid]
            if model.name == "recency":
                want = _recency_reference(events, RecencyModel.half_life_days)[cid]
                assert answer is not None and answer.gender == want, cid
                # the same answer, scores included, whatever the order
                again = run_model(RecencyModel, shuffled, now_ms=now, genders="female,male,kids")
                assert again[cid] is not None
                assert again[cid].gender == want  # type: ignore[union-attr]
                assert all(
                    math.isclose(answer.scores[g], again[cid].scores[g], rel_tol=1e-9)  # type: ignore[index, union-attr]
                    for g in answer.scores  # type: ignore[union-attr]
                )
                continue
            expected = {
                "last": oracle.last,
                "top": oracle.top,
                "top7d": lambda evs: oracle.top_window(evs, now, now, 7),
            }[model.name](mine)
            if expected is None:
                assert answer is None, (model.name, cid)
            else:
                assert answer is not None, (model.name, cid)
                assert (answer.gender, answer.scores) == (expected.gender, expected.scores)


def test_in_process_and_pipeline_agree_for_a_python_model() -> None:
    now = tomorrow_noon_ms()
    events = _events(random.Random(3), now, 40)
    assert run_model(Count, events, now_ms=now, genders="female,male,kids") == run_model(
        Count, events, now_ms=now, genders="female,male,kids", redis=True
    )


class _OddScores(PythonModel):
    """Answers the event's gender; its scores are whatever the state says."""

    name = "odd_scores"

    def identify_gender(self, state: dict[str, Any], event: Event) -> str | None:
        return event.gender

    def scores(self, state: dict[str, Any]) -> dict[str, float] | None:
        return {"female": ODD[0]}


ODD: list[Any] = [None]
NOW = tomorrow_noon_ms()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, True, False])
def test_scores_that_json_would_misstate_are_not_served(value: Any) -> None:
    # NaN and infinities would be served as null, booleans as true/false: not numbers
    ODD[0] = value
    answer = run_model(_OddScores, [{"cid": "C1", "gender": "male"}], now_ms=NOW)["C1"]
    assert answer is not None and answer.gender == "male"
    assert answer.scores is None


@pytest.mark.parametrize("value", [0, 2, 0.25, -1.5])
def test_finite_scores_are_served(value: Any) -> None:
    ODD[0] = value
    answer = run_model(_OddScores, [{"cid": "C1", "gender": "male"}], now_ms=NOW)["C1"]
    assert answer is not None and answer.scores == {"female": value}
