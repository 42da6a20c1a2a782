"""Data drift: per-crop volume features and an Evidently report with a verdict.

Example:
    >>> ref = feature_table(volume_features(v, volume_id=i) for i, v in reference)  # doctest: +SKIP
    >>> cur = feature_table(volume_features(v, volume_id=i) for i, v in current)  # doctest: +SKIP
    >>> detect_drift(ref, cur, out_dir="drift/").drifted  # doctest: +SKIP
    True
"""

from minivess.drift.features import (
    IMAGE_FEATURES,
    MODEL_FEATURES,
    feature_table,
    read_feature_table,
    volume_features,
)
from minivess.drift.report import DriftResult, detect_drift

__all__ = [
    "IMAGE_FEATURES",
    "MODEL_FEATURES",
    "DriftResult",
    "detect_drift",
    "feature_table",
    "read_feature_table",
    "volume_features",
]
