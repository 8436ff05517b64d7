"""Synthetic datasets with a known truth, to check that `genderd evaluate`'s verdicts hold
(issue 25): its intervals cover the true accuracies and differences, equal models are not
called different, and a real gap is found.

Each dataset has ``clients`` shoppers with 1 to 30 events each. A shopper has a *skill*
(drawn from [0.4, 0.8]): every model is right on that shopper's events with probability
``skill + edge`` (the model's edge), so a shopper's events are correlated, as real ones are.
Models agree with each other on most events (a shared draw, as real models that read the same
history do). The true accuracy of a model is therefore ``0.6 + edge`` over the population of
shoppers, and the true difference of two models the difference of their edges.

The "models" are predictors that know the answer they are meant to give for each event (they
are the experiment's design, not learners); they run through the real prequential loop,
tally and scoring (:class:`~genderd.evaluation.prequential.Prequential`,
:class:`~genderd.evaluation.scoring.Tally`, :func:`~genderd.evaluation.scoring.model_scores`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from genderd.evaluation.predictors import MajorityPredictor, Prediction, Predictor
from genderd.evaluation.prequential import Prequential
from genderd.evaluation.report import MAJORITY, Interval, ModelScore, Report
from genderd.evaluation.scoring import Tally, model_scores
from genderd.evaluation.stats import FRAGILE_BELOW
from genderd.events import Event

GENDERS = ("female", "male")
MEAN_SKILL = 0.6
SKILL_RANGE = (0.4, 0.8)
MAX_EVENTS = 30
#: the share of events on which the models' correctness is one shared draw
SHARED = 0.7
T0 = 1_767_225_600_000


class Scripted:
    """A predictor whose answer for each event is set in advance (by the event's ts, unique
    in a dataset: the read time of a prediction is its event's ts)."""

    def __init__(self, answers: dict[int, str]) -> None:
        self.answers = answers

    def new(self) -> None:
        return None

    def predict(self, state: None, t: int) -> Prediction:
        return self.answers.get(t), None

    def apply(self, state: None, event: Event) -> None:
        return None


@dataclass(frozen=True)
class Dataset:
    events: list[Event]
    predictors: list[Predictor]
    names: list[str]
    truth: dict[str, float]  # model -> true accuracy


def dataset(seed: int, clients: int, edges: Sequence[float]) -> Dataset:
    """A dataset with one model per edge, named m0, m1, ..."""
    rnd = random.Random(seed)
    events: list[Event] = []
    answers: list[dict[int, str]] = [{} for _ in edges]
    for c in range(clients):
        cid = f"c{c}"
        skill = rnd.uniform(*SKILL_RANGE)
        for k in range(rnd.randint(1, MAX_EVENTS)):
            ts = T0 + (c * MAX_EVENTS + k) * 1000  # unique: a client's first event by ts
            truth = rnd.choice(GENDERS)
            wrong = GENDERS[1 - GENDERS.index(truth)]
            shared = rnd.random()
            for j, edge in enumerate(edges):
                draw = shared if rnd.random() < SHARED else rnd.random()
                answers[j][ts] = truth if draw < skill + edge else wrong
            events.append(Event(f"{ts}-0", cid, truth, ts))
    predictors: list[Predictor] = [Scripted(answers[j]) for j in range(len(edges))]
    names = [f"m{j}" for j in range(len(edges))]
    return Dataset(
        events,
        predictors,
        names,
        {name: MEAN_SKILL + edge for name, edge in zip(names, edges, strict=True)},
    )


def evaluate(data: Dataset) -> Report:
    """The real prequential loop and scoring over ``data`` (the majority baseline first)."""
    run = Prequential([MajorityPredictor(), *data.predictors])
    names = [MAJORITY, *data.names]
    tally = Tally(len(names), GENDERS)
    tally.add(run.steps(data.events))
    scores, best = model_scores(tally, names)
    return Report(
        events=run.events,
        clients=run.clients,
        fragile=run.clients < FRAGILE_BELOW,
        first_ts=run.first_ts,
        last_ts=run.last_ts,
        session_gap_ms=None,
        models=scores,
        best=best,
        refused={},
        labels=None,
        labels_unknown=0,
    )


def covers(interval: Interval | None, value: float) -> bool:
    return interval is not None and interval.low <= value <= interval.high


def starred(report: Report) -> list[str]:
    """The models (not the baseline) marked significantly behind the best."""
    return [
        score.model
        for score in report.models[1:]
        if score.versus_best is not None and score.versus_best.significant
    ]


@dataclass
class Counts:
    datasets: int = 0
    with_star: int = 0  # datasets where some model is marked behind
    fragile: int = 0  # datasets whose report says the verdicts are fragile
    accuracy_covered: int = 0
    accuracy_intervals: int = 0
    difference_covered: int = 0
    difference_intervals: int = 0

    def add(self, data: Dataset, report: Report) -> None:
        self.datasets += 1
        self.with_star += bool(starred(report))
        self.fragile += report.fragile
        models: list[ModelScore] = list(report.models[1:])
        for score in models:
            self.accuracy_intervals += 1
            self.accuracy_covered += covers(score.accuracy_all_interval, data.truth[score.model])
            versus = score.versus_best
            if versus is not None:
                self.difference_intervals += 1
                true = data.truth[score.model] - data.truth[versus.best]
                self.difference_covered += covers(versus.interval, true)

    def line(self, title: str) -> str:
        return (
            f"{title}: {self.datasets} datasets, {self.with_star} with a '*', "
            f"{self.fragile} said fragile; accuracy intervals covered the truth "
            f"{self.accuracy_covered}/{self.accuracy_intervals}, differences "
            f"{self.difference_covered}/{self.difference_intervals}"
        )


def run(title: str, datasets: int, clients: int, edges: Sequence[float], seed: int) -> Counts:
    """``datasets`` datasets of ``clients`` clients with one model per edge."""
    counts = Counts()
    for n in range(datasets):
        data = dataset(seed + n, clients, edges)
        counts.add(data, evaluate(data))
    return counts


#: the checks of issue 25: (title, datasets, clients, model edges)
CHECKS = (
    ("four equal models, 300 clients", 40, 300, (0.0, 0.0, 0.0, 0.0)),
    ("two equal models, 10 clients", 40, 10, (0.0, 0.0)),
    ("a 10-point gap, 300 clients", 40, 300, (0.0, 0.10)),
)
