"""Evaluating models on history (SPEC §11): which model predicts a shopper's next page best.

``evaluate(events, models, genders=...)`` scores models prequentially (see
:mod:`genderd.evaluation.prequential`) and returns a :class:`Report`; ``read_file``,
``read_streams`` and ``read_labels`` (:mod:`genderd.evaluation.inputs`) read its input the
way the workers validate it.
"""

from genderd.evaluation.inputs import InputSummary, read_file, read_labels, read_streams
from genderd.evaluation.predictors import NotEvaluable
from genderd.evaluation.prequential import evaluate, predictions
from genderd.evaluation.report import (
    HISTORY_BUCKETS,
    MAJORITY,
    Bucket,
    Comparison,
    Interval,
    LabelScore,
    ModelScore,
    Report,
)

__all__ = [
    "HISTORY_BUCKETS",
    "MAJORITY",
    "Bucket",
    "Comparison",
    "InputSummary",
    "Interval",
    "LabelScore",
    "ModelScore",
    "NotEvaluable",
    "Report",
    "evaluate",
    "predictions",
    "read_file",
    "read_labels",
    "read_streams",
]
