"""A hand-made evaluation report, for rendering tests that need no evaluation."""

from __future__ import annotations

from genderd.evaluation.report import (
    Bucket,
    Comparison,
    Interval,
    LabelScore,
    ModelScore,
    Report,
)

HISTORIES = ("0", "1", "2-4", "5-19", "20+")


def _score(
    model: str, accuracy_all: float, versus: Comparison | None, log_loss: float | None
) -> ModelScore:
    buckets = tuple(
        Bucket(
            history,
            100 - 10 * i,
            90 - 10 * i,
            accuracy_all,
            accuracy_all - 0.01 * i,
            Interval(accuracy_all - 0.04, accuracy_all + 0.04),
            Interval(accuracy_all - 0.01 * i - 0.05, accuracy_all - 0.01 * i + 0.05),
        )
        for i, history in enumerate(HISTORIES)
    )
    return ModelScore(
        model=model,
        events=400,
        predicted=350,
        coverage=0.875,
        accuracy=accuracy_all + 0.05,
        accuracy_interval=Interval(accuracy_all, accuracy_all + 0.1),
        accuracy_all=accuracy_all,
        accuracy_all_interval=Interval(accuracy_all - 0.05, accuracy_all + 0.05),
        log_loss=log_loss,
        by_history=buckets,
        versus_best=versus,
    )


def sample_report(labels: bool = True) -> Report:
    """A report of a baseline and two models, ``top`` the best."""
    behind = Comparison("top", -0.125, Interval(-0.2, -0.05), 0.0004, 0.0012, True, 3, "paired")
    close = Comparison("top", -0.01, Interval(-0.03, 0.01), 0.3, 0.3, False, 3, "paired")
    label_scores = (
        LabelScore(
            "top",
            10,
            9,
            0.9,
            7 / 9,
            Interval(0.4531, 0.9370),
            {"female": {"female": 5, "none": 1}, "male": {"female": 2, "male": 2}},
        ),
    )
    return Report(
        events=400,
        clients=30,
        fragile=False,
        first_ts=1704067200000,
        last_ts=1704153600000,
        session_gap_ms=None,
        models=(
            _score("majority", 0.55, behind, None),
            _score("last", 0.665, close, None),
            _score("top", 0.675, None, 0.4567),
        ),
        best="top",
        refused={"luaonly": "model 'luaonly': a Lua-backed model has no Python predictor"},
        labels=label_scores if labels else None,
        labels_unknown=2 if labels else 0,
        events_invalid=3,
        invalid_reasons={"malformed": 1, "bad_ts": 2},
    )
