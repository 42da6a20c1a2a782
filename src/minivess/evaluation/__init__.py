"""Evaluation of a trained model on labelled volumes.

Metrics per volume, their means with bootstrap intervals, figures, and optional MLflow logging.

Example:
    >>> from minivess.evaluation import evaluate_prepared  # doctest: +SKIP
    >>> result = evaluate_prepared("models:/minivess@champion", "data/prepared/vesselnn",
    ...                            fold=0)  # doctest: +SKIP
    >>> result.summary["dice"]  # doctest: +SKIP
    MetricSummary(mean=0.78, ci_low=0.72, ci_high=0.83, n=2, n_nan=0)
    >>> result.save("evaluation/vesselnn")  # doctest: +SKIP
"""

from minivess.evaluation.bootstrap import MetricSummary, bootstrap_mean_ci
from minivess.evaluation.evaluate import COLUMNS, METRICS, EvaluationResult, evaluate
from minivess.evaluation.prepared import SUBSETS, evaluate_prepared

__all__ = [
    "COLUMNS",
    "METRICS",
    "SUBSETS",
    "EvaluationResult",
    "MetricSummary",
    "bootstrap_mean_ci",
    "evaluate",
    "evaluate_prepared",
]
