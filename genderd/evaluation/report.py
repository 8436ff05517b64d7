"""What an evaluation reports (:func:`genderd.evaluation.evaluate`): plain dataclasses, and
:meth:`Report.to_dict` for JSON."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

#: history-length buckets: the number of the client's earlier events
HISTORY_BUCKETS = ("0", "1", "2-4", "5-19", "20+")

#: the global-majority baseline's name in reports
MAJORITY = "majority"


@dataclass(frozen=True)
class Interval:
    """A 95% confidence interval."""

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
    accuracy_interval: Interval | None = None  # 95%, clustered by client
    accuracy_all_interval: Interval | None = None


@dataclass(frozen=True)
class Comparison:
    """A model against the best one, on the same events (see :mod:`genderd.evaluation.stats`)."""

    best: str
    difference: float  # accuracy_all(this) - accuracy_all(best); > 0 only for the baseline
    interval: Interval  # 95% simultaneous over every pair of rows, clustered by client
    p_value: float  # two-sided, paired, clustered by client, not adjusted
    p_adjusted: float  # Holm over every pair of rows
    significant: bool  # behind the best: difference < 0 and p_adjusted < 0.05
    pairs: int  # the pairs of rows the adjustment is over
    method: str


@dataclass(frozen=True)
class ModelScore:
    """One model's (or the baseline's) prequential scores."""

    model: str  # model name, or MAJORITY for the baseline
    events: int  # events scored
    predicted: int  # scored events for which the model had an answer
    coverage: float  # predicted / events (0.0 when events == 0)
    accuracy: float | None  # over predicted events
    accuracy_interval: Interval | None  # 95%, clustered by client
    accuracy_all: float | None  # over all scored events
    accuracy_all_interval: Interval | None
    log_loss: float | None  # over predicted events with scores (None: the model gives none)
    by_history: tuple[Bucket, ...]  # one per HISTORY_BUCKETS entry, in that order
    versus_best: Comparison | None  # None for the best model itself


@dataclass(frozen=True)
class LabelScore:
    """A model's answers at the end of the history against known labels."""

    model: str
    clients: int  # labelled clients that have events
    answered: int  # of which the model has an answer
    coverage: float
    accuracy: float | None  # over answered clients
    accuracy_interval: Interval | None  # 95%, Wilson's over answered clients
    confusion: dict[str, dict[str, int]]  # true gender -> predicted gender (or "none") -> clients


@dataclass(frozen=True)
class ShardRange:
    """What was read of one shard's stream."""

    stream: str  # the stream's key
    entries: int  # entries read (valid or not)
    first_id: str | None  # the first and last entry ids read (None: the stream was empty)
    last_id: str | None


@dataclass(frozen=True)
class Source:
    """Where the events came from: a file (or stdin), or the deployment's streams."""

    kind: str  # "file", "stdin" or "streams"
    path: str | None = None  # the file's path
    sha256: str | None = None  # of the file's (stdin's) bytes, as read
    size: int | None = None  # its bytes
    server: str | None = None  # the server's address, without credentials
    prefix: str | None = None  # the deployment's key prefix
    shards: tuple[ShardRange, ...] = ()


@dataclass(frozen=True)
class ModelOrigin:
    """An evaluated (or refused) model: what it is and where it comes from."""

    name: str
    kind: str  # as the catalog records it: built-in, python, window or lua
    cls: str  # module.QualName of its class
    loaded_from: str  # entry point or GENDERD_PLUGINS entry
    window_days: int | None = None  # a windowed model's window


@dataclass(frozen=True)
class Provenance:
    """What was evaluated, and how: enough to tell two reports apart, or to run one again."""

    input: Source
    since_ms: int | None
    until_ms: int | None
    warmup: bool  # history before since_ms applied, not scored
    order: str  # "time" or "arrival"
    session_gap_ms: int | None
    max_delay_ms: int | None
    window_days: int  # the deployment's window (GENDERD_WINDOW_DAYS)
    genders: tuple[str, ...]
    version: str  # genderd's
    models: tuple[ModelOrigin, ...]
    evaluated_at_ms: int  # the clock when the input was read (a file's missing ts is this)


@dataclass(frozen=True)
class Report:
    """The result of :func:`genderd.evaluation.evaluate`."""

    events: int  # valid events evaluated
    clients: int
    fragile: bool  # fewer clients than FRAGILE_BELOW: intervals and verdicts are unreliable
    first_ts: int | None
    last_ts: int | None
    session_gap_ms: int | None
    models: tuple[ModelScore, ...]  # the baseline (MAJORITY) first, then the models by name
    best: str | None  # the evaluated model (not the baseline) with the highest accuracy_all
    refused: dict[str, str]  # model -> one-line reason
    labels: tuple[LabelScore, ...] | None
    labels_unknown: int  # labelled clients with no event in the history (0 without labels)
    events_invalid: int = 0  # filled by the caller from the input (dataclasses.replace)
    invalid_reasons: dict[str, int] = field(default_factory=dict)  # reason code -> count
    order: str = "time"  # "time" or "arrival": the order each client's events were applied in
    warmup_events: int = 0  # events applied before the time range, not scored (warm-up)
    provenance: Provenance | None = None  # filled by the caller (dataclasses.replace)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready nested dicts and lists, with the same field names."""
        return dataclasses.asdict(self)

    def model(self, name: str) -> ModelScore:
        """The scores of the model (or baseline) ``name``.

        Raises:
            KeyError: no such model in the report.
        """
        for score in self.models:
            if score.model == name:
                return score
        raise KeyError(name)


__all__ = [
    "HISTORY_BUCKETS",
    "MAJORITY",
    "Bucket",
    "Comparison",
    "Interval",
    "LabelScore",
    "ModelOrigin",
    "ModelScore",
    "Provenance",
    "Report",
    "ShardRange",
    "Source",
]
