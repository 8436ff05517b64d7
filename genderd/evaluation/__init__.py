"""Evaluating models on history (SPEC §11): which model predicts a shopper's next page best.

``evaluate(events, models, genders=...)`` scores models prequentially (see
:mod:`genderd.evaluation.prequential`) in time or arrival order and returns a :class:`Report`;
:class:`Evaluation` does the same fed chunk by chunk; ``read_file``, ``stream_chunks``,
``stream_events``, ``read_streams`` and ``read_labels`` (:mod:`genderd.evaluation.inputs`)
read its input the way the workers validate it; :class:`Selection` says which events are
applied and scored.
"""

from genderd.evaluation.inputs import (
    InputSummary,
    read_file,
    read_labels,
    read_streams,
    stream_chunks,
    stream_events,
)
from genderd.evaluation.predictors import ARRIVAL, ORDERS, TIME, NotEvaluable, Order, Predictor
from genderd.evaluation.prequential import Evaluation, evaluate, predictions
from genderd.evaluation.report import (
    HISTORY_BUCKETS,
    MAJORITY,
    Bucket,
    Comparison,
    Interval,
    LabelScore,
    ModelScore,
    Provenance,
    Report,
)
from genderd.evaluation.selection import Selection

__all__ = [
    "ARRIVAL",
    "HISTORY_BUCKETS",
    "MAJORITY",
    "ORDERS",
    "TIME",
    "Bucket",
    "Comparison",
    "Evaluation",
    "InputSummary",
    "Interval",
    "LabelScore",
    "ModelScore",
    "NotEvaluable",
    "Order",
    "Predictor",
    "Provenance",
    "Report",
    "Selection",
    "evaluate",
    "predictions",
    "read_file",
    "read_labels",
    "read_streams",
    "stream_chunks",
    "stream_events",
]
