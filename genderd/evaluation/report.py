"""What an evaluation finds (SPEC §11): plain dataclasses, JSON-ready through ``to_dict``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True)
class Bucket:
    """One history-length bucket of one model."""

    history: str  # one of HISTORY_BUCKETS
    events: int  # events scored in this bucket
    predicted: int
    accuracy: float | None  # over predicted events (None when predicted == 0)
    accuracy_all: float | None  # no prediction counts as a miss (None when events == 0)


@dataclass(frozen=True)
class Comparison:
    """This model against the best one, on the same events."""

    best: str
    difference: float  # accuracy_all(this) - accuracy_all(best), <= 0
    interval: Interval  # 95% CI of the difference, clustered by client
    p_value: float  # two-sided, paired, clustered by client
    significant: bool  # p_value < 0.05
    method: str  # e.g. "paired difference, clustered by client (z)"


@dataclass(frozen=True)
class ModelScore:
    model: str  # model name, or MAJORITY for the baseline
    events: int  # events scored
    predicted: int  # scored events for which the model had an answer
    coverage: float  # predicted / events (0.0 when events == 0)
    accuracy: float | None  # over predicted events
    accuracy_interval: Interval | None  # 95%, clustered by client
    accuracy_all: float | None  # over all scored events
    accuracy_all_interval: Interval | None
    log_loss: float | None  # over predicted events, for models that give scores
    by_history: tuple[Bucket, ...]  # one per HISTORY_BUCKETS entry, in that order
    versus_best: Comparison | None  # None for the best model itself


@dataclass(frozen=True)
class LabelScore:
    """Answers at the end of the history against known labels."""

    model: str
    clients: int  # labelled clients that have events
    answered: int  # of which the model has an answer
    coverage: float
    accuracy: float | None  # over answered clients
    confusion: dict[str, dict[str, int]]  # true gender -> predicted (or "none") -> clients


@dataclass(frozen=True)
class Report:
    events: int  # valid events evaluated
    clients: int
    first_ts: int | None
    last_ts: int | None
    session_gap_ms: int | None
    models: tuple[ModelScore, ...]  # the baseline (MAJORITY) first, then the models by name
    best: str | None  # the evaluated model (not the baseline) with the highest accuracy_all
    refused: dict[str, str]  # model -> one-line reason
    labels: tuple[LabelScore, ...] | None
    labels_unknown: int  # labelled clients with no event in the history (0 without labels)
    events_invalid: int = 0  # filled by the caller from the input (dataclasses.replace)
    invalid_reasons: dict[str, int] = field(default_factory=dict)  # reason -> lines/entries

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the same plain field names, nested (tuples become lists)."""
        return _plain(dataclasses.asdict(self))  # type: ignore[no-any-return]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
