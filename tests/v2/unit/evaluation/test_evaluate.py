"""evaluate(): the table holds exactly the metrics of the predictions users get."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from minivess.adapters import ModelAdapter
from minivess.data.volume import Volume
from minivess.errors import ConfigError, DataError
from minivess.evaluation import COLUMNS, METRICS, EvaluationResult, evaluate
from minivess.inference import PredictionSettings, Predictor
from minivess.metrics import VesselMetrics

from .conftest import PREDICTION_EXTRA

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def predictor(checkpoint: Path) -> Predictor:
    return Predictor.from_source(checkpoint)


@pytest.fixture
def result(predictor: Predictor, real_cases: list) -> EvaluationResult:
    return evaluate(predictor, real_cases, n_boot=2000, seed=3)


def test_table_values_equal_the_metrics_computed_directly(
    result: EvaluationResult, predictor: Predictor, real_cases: list
) -> None:
    table = result.per_volume
    assert list(table.columns) == list(COLUMNS)
    assert list(table["id"]) == [case_id for case_id, _, _ in real_cases]
    for (case_id, image, label), row in zip(real_cases, table.to_dict("records"), strict=True):
        pred = predictor.predict(image).mask.array == 1
        truth = label.array != 0
        direct = VesselMetrics(tolerance_um=2.0)
        direct.update(
            torch.from_numpy(pred)[None], torch.from_numpy(truth)[None], spacing=image.spacing
        )
        for name, value in direct.compute().items():
            assert row[name] == float(value), (case_id, name)
        assert row["vessel_fraction_true"] == truth.mean()
        assert row["vessel_fraction_pred"] == pred.mean()
        assert row["seconds"] > 0


def test_summary_is_the_mean_with_a_bootstrap_interval(result: EvaluationResult) -> None:
    assert set(result.summary) == set(METRICS)
    for name, stats in result.summary.items():
        values = result.per_volume[name].to_numpy()
        assert stats.mean == pytest.approx(np.nanmean(values))
        assert stats.ci_low <= stats.mean <= stats.ci_high
        assert stats.n + stats.n_nan == len(values)
    assert result.settings == {"tolerance_um": 2.0, "n_boot": 2000, "confidence": 0.95, "seed": 3}
    assert result.model["adapter"] == "segresnet"


def test_bare_adapter_with_settings_matches_the_predictor(
    tiny_adapter: ModelAdapter, result: EvaluationResult, real_cases: list
) -> None:
    settings = PredictionSettings.from_extra(PREDICTION_EXTRA)
    again = evaluate(tiny_adapter, real_cases, settings=settings, n_boot=2000, seed=3)
    metrics = list(METRICS)
    pd.testing.assert_frame_equal(again.per_volume[metrics], result.per_volume[metrics])
    with pytest.raises(ConfigError, match="PredictionSettings"):
        evaluate(tiny_adapter, real_cases)


def test_empty_label_gives_nan_distances_counted_in_the_summary(
    predictor: Predictor, real_cases: list
) -> None:
    case_id, image, label = real_cases[0]
    empty = label.with_array(np.zeros_like(label.array))
    result = evaluate(predictor, [(case_id, image, empty), real_cases[1]], n_boot=500)
    first = result.per_volume.iloc[0]
    assert first["vessel_fraction_true"] == 0.0
    assert first["vessel_fraction_pred"] > 0  # the untrained net sees vessels everywhere
    assert first["dice"] == 0.0
    assert math.isnan(first["hd95"])
    assert result.summary["hd95"].n_nan == 1
    assert result.summary["hd95"].mean == result.per_volume.iloc[1]["hd95"]
    assert result.summary_dict()["metrics"]["hd95"]["n_nan"] == 1


def test_cases_that_cannot_be_scored_are_refused(predictor: Predictor, real_cases: list) -> None:
    case_id, image, label = real_cases[0]
    cropped = Volume(label.array[:-1], label.affine, source=Path("label.nii.gz"))
    with pytest.raises(DataError) as info:
        evaluate(predictor, [(case_id, image, cropped)])
    assert info.value.rule == "label-shape"
    assert info.value.path == Path("label.nii.gz")
    shifted = np.array(label.affine)
    shifted[0, 3] += 10.0
    with pytest.raises(DataError, match="label-geometry"):
        evaluate(predictor, [(case_id, image, Volume(label.array, shifted))])
    with pytest.raises(DataError, match="duplicate-id"):
        evaluate(predictor, [real_cases[0], real_cases[0]])
    with pytest.raises(DataError, match="no-volumes"):
        evaluate(predictor, [])


def test_save_writes_table_summary_and_valid_pngs(result: EvaluationResult, tmp_path: Path) -> None:
    files = result.save(tmp_path / "eval")
    names = sorted(str(p.relative_to(tmp_path / "eval")) for p in files)
    assert names == sorted(
        [
            "per_volume.csv",
            "summary.json",
            "figures/metrics.png",
            *(f"figures/overlays/{case_id}.png" for case_id in result.per_volume["id"]),
        ]
    )
    table = pd.read_csv(tmp_path / "eval" / "per_volume.csv")
    pd.testing.assert_frame_equal(table, result.per_volume, check_dtype=False)
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["n_volumes"] == 2
    assert summary["metrics"]["dice"]["mean"] == pytest.approx(result.summary["dice"].mean)
    assert summary["model"]["settings"]["inference"]["roi_size"] == [64, 64, 16]
    for path in files:
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == PNG_SIGNATURE
    from matplotlib.image import imread

    assert imread(tmp_path / "eval" / "figures" / "metrics.png").ndim == 3
    assert not list((tmp_path / "eval").rglob("*.part"))


def test_bad_bootstrap_settings_fail_before_any_prediction(predictor: Predictor) -> None:
    def cases():
        raise AssertionError("no volume may be read")
        yield  # pragma: no cover

    with pytest.raises(ConfigError, match="n_boot"):
        evaluate(predictor, cases(), n_boot=0)
