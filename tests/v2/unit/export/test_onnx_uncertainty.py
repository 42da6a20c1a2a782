"""An exported ONNX model carries the checkpoint's uncertainty head and predicts with it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from minivess.adapters import load_checkpoint
from minivess.data.io import read_volume
from minivess.export import OnnxExportError, load_onnx
from minivess.export.onnx import describe, export_key
from minivess.export.source import export_source
from minivess.inference import PredictionSettings, Predictor
from minivess.uncertainty import FNRControl, PlattScaling, PredictionSets, UncertaintyHead
from minivess.uncertainty.head import save_with_uncertainty

if TYPE_CHECKING:
    from tests.v2.conftest import OnnxModel

HEAD = UncertaintyHead(
    calibration=PlattScaling(scale=0.8, bias=-0.7, n_voxels=1000),
    fnr_control=FNRControl(alpha=0.1, threshold=0.3, n_calibration=12, calibration_ids=("a",)),
    prediction_sets=PredictionSets(alpha=0.1, vessel_from=0.45, background_to=0.55),
    report={"calibration_method": "platt"},
)


@pytest.fixture
def calibrated(onnx_model: OnnxModel, tmp_path: Path) -> Path:
    """The tiny checkpoint with ``HEAD`` stored in it."""
    return save_with_uncertainty(onnx_model.checkpoint, tmp_path / "calibrated.pt", HEAD)


def test_onnx_predictions_carry_the_same_uncertainty_as_the_checkpoint(
    calibrated: Path, prepared_synthetic: Any, tmp_path: Path
) -> None:
    exported = export_source(calibrated, tmp_path / "model.onnx", cache_dir=tmp_path / "cache")
    assert exported.metadata.uncertainty == HEAD.to_dict()
    assert exported.metadata.head == HEAD
    volume = read_volume(sorted((prepared_synthetic.out / "images").iterdir())[0])
    torch_prediction = Predictor.from_source(calibrated).predict(volume)
    onnx_prediction = Predictor.from_source(exported.path).predict(volume)
    assert onnx_prediction.model.backend == "onnx"
    assert onnx_prediction.calibrated
    np.testing.assert_allclose(
        onnx_prediction.probability.array, torch_prediction.probability.array, atol=1e-4
    )
    for field in ("mask", "conformal_mask", "prediction_set"):
        onnx_map = getattr(onnx_prediction, field)
        torch_map = getattr(torch_prediction, field)
        assert onnx_map is not None, field
        assert np.mean(onnx_map.array != torch_map.array) < 1e-4, field  # fp32 ties only
    # the head was applied: the stored threshold, not argmax, decides the conformal mask
    conformal = onnx_prediction.conformal_mask
    assert conformal is not None
    assert not np.array_equal(conformal.array, onnx_prediction.mask.array)


def test_a_new_head_is_a_new_export(calibrated: Path, onnx_model: OnnxModel) -> None:
    """The export cache must not hand out a graph whose metadata holds a stale head."""
    adapter, plain = load_checkpoint(onnx_model.checkpoint)
    _, with_head = load_checkpoint(calibrated)
    settings = PredictionSettings.from_checkpoint(plain)
    keys = {export_key(adapter, describe(adapter, settings, info)) for info in (plain, with_head)}
    recalibrated = UncertaintyHead(calibration=PlattScaling(scale=0.8, bias=-0.6))
    changed = {**with_head.extra, "uncertainty": HEAD.merged(recalibrated).to_dict()}
    info = replace(with_head, extra=changed)
    keys.add(export_key(adapter, describe(adapter, settings, info)))
    assert len(keys) == 3


def test_a_malformed_head_in_the_metadata_is_refused(onnx_model: OnnxModel, tmp_path: Path) -> None:
    import onnx

    graph = onnx.load(str(onnx_model.onnx))
    props = {p.key: p.value for p in graph.metadata_props}
    props["minivess.uncertainty"] = json.dumps({"calibration": {"method": "isotonic"}})
    del graph.metadata_props[:]
    onnx.helper.set_model_props(graph, props)
    bad = tmp_path / "bad.onnx"
    onnx.save(graph, str(bad))
    with pytest.raises(OnnxExportError, match=r"uncertainty.*isotonic"):
        load_onnx(bad)
