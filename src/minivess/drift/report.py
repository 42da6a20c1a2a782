"""Drift of current volumes against reference volumes: Evidently report and a verdict.

Each feature is compared with a two-sample Kolmogorov-Smirnov test (Evidently's
``DataDriftPreset(method="ks")``); a feature drifts when its p-value is below ``threshold``,
and the data set drifts when at least ``drift_share`` of the features drift. The verdict, the
share and every p-value are written to ``drift.json`` beside Evidently's ``drift.html``.
Evidently is imported only here (its import takes ~10 s).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from minivess.data.io import atomic_path
from minivess.drift.features import feature_columns
from minivess.errors import DataError

THRESHOLD = 0.05
"""p-value under which a feature drifts."""
DRIFT_SHARE = 0.5
"""Share of drifted features from which the data set drifts (Evidently's default)."""
HTML_FILE = "drift.html"
JSON_FILE = "drift.json"


@dataclass(frozen=True)
class DriftResult:
    """The machine-readable outcome of a drift check.

    Args:
        drifted: The verdict: at least ``drift_share`` of the features drifted.
        share: Share of features that drifted.
        p_values: KS p-value per feature.
        threshold: p-value threshold per feature.
        drift_share: Share threshold of the verdict.
        n_reference: Reference rows (crops).
        n_current: Current rows.
        files: Files written (HTML report, JSON verdict), if saved.
    """

    drifted: bool
    share: float
    p_values: dict[str, float]
    threshold: float
    drift_share: float
    n_reference: int
    n_current: int
    files: list[Path] = field(default_factory=list)

    @property
    def drifted_features(self) -> list[str]:
        """Features whose p-value is below the threshold."""
        return [name for name, p in self.p_values.items() if p < self.threshold]

    def to_dict(self) -> dict[str, Any]:
        """The content of ``drift.json``."""
        return {
            "drifted": self.drifted,
            "share": self.share,
            "drifted_features": self.drifted_features,
            "p_values": self.p_values,
            "threshold": self.threshold,
            "drift_share": self.drift_share,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
        }

    def metrics(self) -> dict[str, float]:
        """Numbers for MLflow and service metrics (``drift_share``, ``drift_detected``, ...)."""
        out = {"drift_share": self.share, "drift_detected": float(self.drifted)}
        out.update({f"drift_p_{name}": p for name, p in self.p_values.items()})
        return out


def _shared_columns(reference: pd.DataFrame, current: pd.DataFrame) -> list[str]:
    columns = [c for c in feature_columns(reference) if c in current.columns]
    if not columns:
        raise DataError(None, "columns", "reference and current tables share no feature column")
    for name, table in (("reference", reference), ("current", current)):
        if len(table) < 2:
            raise DataError(None, "too-few-rows", f"the {name} table needs at least two crops")
    return columns


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    out_dir: str | Path | None = None,
    threshold: float = THRESHOLD,
    drift_share: float = DRIFT_SHARE,
) -> DriftResult:
    """Compare the current feature table with the reference one.

    Args:
        reference: Features of the reference volumes (e.g. the training data).
        current: Features of the volumes to check.
        out_dir: Where to write ``drift.html`` and ``drift.json`` (atomically); nothing is
            written when ``None``.
        threshold: Per-feature p-value threshold.
        drift_share: Share of drifted features that makes the verdict "drift".

    Raises:
        DataError: No shared feature column, or fewer than two rows on either side.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = _shared_columns(reference, current)
    definition = DataDefinition(numerical_columns=columns)
    report = Report(
        [DataDriftPreset(method="ks", threshold=threshold, drift_share=drift_share)],
        include_tests=True,
    )
    with warnings.catch_warnings():
        # Evidently correlates every pair of columns; a constant one (e.g. one spacing for all
        # crops) divides by a zero standard deviation. The KS tests are unaffected.
        warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
        snapshot = report.run(
            current_data=Dataset.from_pandas(current[columns], data_definition=definition),
            reference_data=Dataset.from_pandas(reference[columns], data_definition=definition),
        )
    p_values = _p_values(snapshot.dict(), columns)
    share = sum(p < threshold for p in p_values.values()) / len(p_values)
    result = DriftResult(
        drifted=share >= drift_share,
        share=share,
        p_values=p_values,
        threshold=threshold,
        drift_share=drift_share,
        n_reference=len(reference),
        n_current=len(current),
    )
    if out_dir is not None:
        result.files.extend(_save(snapshot, result, Path(out_dir)))
    return result


def _p_values(content: dict[str, Any], columns: list[str]) -> dict[str, float]:
    """Per column, the p-value of Evidently's ``ValueDrift`` metric."""
    found: dict[str, float] = {}
    for metric in content.get("metrics", []):
        config = metric.get("config", {})
        if config.get("type", "").endswith("ValueDrift") and config.get("column") in columns:
            found[config["column"]] = float(metric["value"])
    missing = [c for c in columns if c not in found]
    if missing:
        raise DataError(None, "evidently", f"Evidently reported no drift value for {missing}")
    return {c: found[c] for c in columns}


def _save(snapshot: Any, result: DriftResult, out: Path) -> list[Path]:
    html, verdict = out / HTML_FILE, out / JSON_FILE
    with atomic_path(html) as tmp:
        snapshot.save_html(str(tmp))
    with atomic_path(verdict) as tmp:
        tmp.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    return [html, verdict]
