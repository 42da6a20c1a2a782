"""Evaluate a model on labelled volumes: per-volume metrics, bootstrap summary, figures.

Every volume goes through :class:`minivess.inference.Predictor`, the same path ``minivess
predict`` and the services use, so what is measured is what users get. Metrics are
:class:`minivess.metrics.VesselMetrics` (Dice, IoU, clDice, NSD, HD95, MASD in micrometres, with
its empty-mask policy); the summary is each metric's mean over volumes with a seeded
percentile-bootstrap interval (:mod:`minivess.evaluation.bootstrap`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from minivess.adapters import ModelAdapter
from minivess.data.io import atomic_path
from minivess.data.volume import Volume
from minivess.errors import ConfigError, DataError
from minivess.evaluation.bootstrap import (
    CONFIDENCE,
    N_BOOT,
    MetricSummary,
    bootstrap_mean_ci,
    check_bootstrap,
)
from minivess.evaluation.figures import (
    VolumeViews,
    case_figure,
    metrics_figure,
    save_png,
    volume_views,
)
from minivess.inference import PredictionSettings, Predictor
from minivess.inference.predictor import VESSEL_CLASS
from minivess.metrics import VesselMetrics

METRICS: tuple[str, ...] = VesselMetrics.score_names
"""Metrics in the table and summary: dice, iou, cldice, nsd, hd95 (um), masd (um)."""
COLUMNS: tuple[str, ...] = (
    "id",
    *METRICS,
    "vessel_fraction_true",
    "vessel_fraction_pred",
    "seconds",
)
"""Columns of the per-volume table, in order."""
PER_VOLUME_FILE = "per_volume.csv"
SUMMARY_FILE = "summary.json"
METRICS_FIGURE = "figures/metrics.png"
OVERLAY_DIR = "figures/overlays"

Case = tuple[str, Volume, Volume]
"""``(id, raw image, label)``; the label is non-zero on vessels and shares the image's grid."""
Progress = Callable[[int, str], None]
"""Called as ``progress(done, case_id)`` after each volume."""


@dataclass
class EvaluationResult:
    """Per-volume metrics of one evaluation, their summary, and what the figures need.

    Args:
        per_volume: One row per volume with :data:`COLUMNS`.
        summary: Mean and bootstrap interval per metric in :data:`METRICS`.
        settings: How it was computed (``tolerance_um``, ``n_boot``, ``confidence``, ``seed``).
        model: Description of the model (:meth:`minivess.inference.ModelInfo.to_dict`).
        data: Description of the data (dataset, version, subset, fold), if known.
        views: Per volume id, the 2D views its overlay figure shows.
    """

    per_volume: pd.DataFrame
    summary: dict[str, MetricSummary]
    settings: dict[str, Any]
    model: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    views: dict[str, VolumeViews] = field(default_factory=dict, repr=False)

    def summary_dict(self) -> dict[str, Any]:
        """The content of ``summary.json`` (NaN written as ``null``)."""
        return {
            "n_volumes": len(self.per_volume),
            "metrics": {name: stats.to_dict() for name, stats in self.summary.items()},
            "settings": self.settings,
            "model": self.model,
            "data": self.data,
        }

    def save(
        self, out_dir: str | Path, *, run_id: str | None = None, log: bool = True
    ) -> list[Path]:
        """Write the table, summary and figures; log them to MLflow when a run is in play.

        Files: ``per_volume.csv``, ``summary.json``, ``figures/metrics.png`` and
        ``figures/overlays/<id>.png`` (one per volume), each written atomically. They are also
        logged, with ``test_<metric>_mean``, ``_ci_low`` and ``_ci_high`` metrics, to run
        ``run_id`` or, if none is given, to the active MLflow run if there is one (see
        :func:`minivess.evaluation.mlflow_log.log_evaluation`).

        Args:
            out_dir: Output folder (created if missing).
            run_id: MLflow run to log into.
            log: ``False`` only writes the files (a caller logging them its own way, e.g.
                through a run that spools while the tracking server is down).

        Returns:
            The files written.

        Raises:
            MinivessError: ``run_id`` is not a run of the configured tracking store (checked
                before anything is written).
        """
        from minivess.evaluation.mlflow_log import check_run, log_evaluation

        if log and run_id is not None:
            check_run(run_id)  # before writing: a wrong id leaves nothing behind
        out = Path(out_dir)
        written = [self._write_table(out / PER_VOLUME_FILE), self._write_summary(out)]
        written.append(
            save_png(metrics_figure(self.per_volume, self.summary, METRICS), out / METRICS_FIGURE)
        )
        for case_id, views in self.views.items():
            figure = case_figure(views, _case_title(case_id, self.per_volume))
            written.append(save_png(figure, out / OVERLAY_DIR / f"{_file_name(case_id)}.png"))
        if log:
            log_evaluation(self, out, written, run_id=run_id)
        return written

    def _write_table(self, path: Path) -> Path:
        with atomic_path(path) as tmp:
            self.per_volume.to_csv(tmp, index=False, lineterminator="\n")
        return path

    def _write_summary(self, out: Path) -> Path:
        path = out / SUMMARY_FILE
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.summary_dict(), indent=2) + "\n", encoding="utf-8")
        return path


def evaluate(
    model: Predictor | ModelAdapter,
    cases: Iterable[Case],
    *,
    settings: PredictionSettings | None = None,
    tolerance_um: float = 2.0,
    n_boot: int = N_BOOT,
    confidence: float = CONFIDENCE,
    seed: int = 0,
    progress: Progress | None = None,
) -> EvaluationResult:
    """Predict and score every case.

    Args:
        model: A :class:`Predictor`, or an adapter together with ``settings``.
        cases: ``(id, image, label)`` triples, read one at a time (a generator keeps memory
            to one volume). Ids must be unique.
        settings: Preprocessing and window for a bare adapter; ignored for a predictor.
        tolerance_um: NSD tolerance in micrometres.
        n_boot: Bootstrap resamples for the intervals.
        confidence: Coverage of the intervals.
        seed: Seed of the bootstrap.
        progress: Called after each volume.

    Returns:
        The per-volume table, the summary and the figure views.

    Raises:
        ConfigError: An adapter without ``settings``, or invalid bootstrap settings.
        DataError: No case, a repeated id, or a label whose grid differs from its image's.

    Example:
        >>> result = evaluate(Predictor.from_source("best.pt"), cases)  # doctest: +SKIP
        >>> result.summary["dice"].mean, result.per_volume[["id", "dice"]]  # doctest: +SKIP
    """
    predictor = _as_predictor(model, settings)
    check_bootstrap(n_boot, confidence)  # before minutes of prediction, not after
    metrics = VesselMetrics(tolerance_um=tolerance_um)
    rows: list[dict[str, Any]] = []
    views: dict[str, VolumeViews] = {}
    for case_id, image, label in cases:
        if case_id in views:
            raise DataError(image.source, "duplicate-id", f"case id {case_id!r} appears twice")
        row, views[case_id] = _score(predictor, metrics, case_id, image, label)
        rows.append(row)
        if progress is not None:
            progress(len(rows), case_id)
    if not rows:
        raise DataError(None, "no-volumes", "nothing to evaluate: no (id, image, label) case")
    table = _table(rows, metrics.per_volume())
    summary = {
        name: bootstrap_mean_ci(table[name], n_boot=n_boot, confidence=confidence, seed=seed)
        for name in METRICS
    }
    return EvaluationResult(
        per_volume=table,
        summary=summary,
        settings={
            "tolerance_um": float(tolerance_um),
            "n_boot": int(n_boot),
            "confidence": float(confidence),
            "seed": int(seed),
        },
        model={**predictor.model.to_dict(), "settings": predictor.settings.to_extra()},
        views=views,
    )


def _score(
    predictor: Predictor, metrics: VesselMetrics, case_id: str, image: Volume, label: Volume
) -> tuple[dict[str, Any], VolumeViews]:
    """Predict one case, add its scores to ``metrics``; its table row (sans metrics) and views."""
    _check_grid(image, label)
    prediction = predictor.predict(image)
    pred = prediction.mask.array == VESSEL_CLASS
    truth = np.asarray(label.array) != 0
    metrics.update(
        torch.from_numpy(pred)[None], torch.from_numpy(truth)[None], spacing=image.spacing
    )
    row = {
        "id": case_id,
        "vessel_fraction_true": float(truth.mean()),
        "vessel_fraction_pred": float(pred.mean()),
        "seconds": prediction.seconds,
    }
    return row, volume_views(np.asarray(image.array), truth, pred)


def _as_predictor(
    model: Predictor | ModelAdapter, settings: PredictionSettings | None
) -> Predictor:
    if isinstance(model, Predictor):
        return model
    if settings is None:
        raise ConfigError(
            "evaluating a bare adapter needs its PredictionSettings (normalisation and window); "
            "pass settings=PredictionSettings.from_checkpoint(info) or use a Predictor"
        )
    device = next(model.network.parameters()).device
    return Predictor(model, settings, device=str(device))


def _check_grid(image: Volume, label: Volume) -> None:
    """A label must sit on its image's grid, or every metric would compare the wrong voxels."""
    if image.shape != label.shape:
        raise DataError(
            label.source,
            "label-shape",
            f"label shape {label.shape} differs from image shape {image.shape}",
        )
    if not np.allclose(image.affine, label.affine, rtol=1e-5, atol=1e-4):
        raise DataError(
            label.source,
            "label-geometry",
            "label affine differs from its image's; resample the label onto the image grid",
        )


def _table(rows: list[dict[str, Any]], scores: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    for name in METRICS:
        table[name] = scores[name].double().cpu().numpy()
    return table[list(COLUMNS)]


def _case_title(case_id: str, table: pd.DataFrame) -> str:
    row = table.loc[table["id"] == case_id].iloc[0]
    return f"{case_id}: Dice {row['dice']:.3f}, clDice {row['cldice']:.3f}"


def _file_name(case_id: str) -> str:
    """A case id made safe as a file name (ids from a manifest already are)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", case_id) or "volume"
