"""The uncertainty entry of a checkpoint: stored as plain values, read back, applied."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from minivess.adapters import load_checkpoint
from minivess.errors import ConfigError
from minivess.uncertainty.calibration import PlattScaling, TemperatureScaling
from minivess.uncertainty.conformal import UNCERTAIN, VESSEL, FNRControl, PredictionSets
from minivess.uncertainty.head import EXTRA_KEY, UncertaintyHead, save_with_uncertainty

HEAD = UncertaintyHead(
    calibration=TemperatureScaling(0.5, n_voxels=100),
    fnr_control=FNRControl(alpha=0.1, threshold=0.2, n_calibration=5, calibration_ids=("a",)),
    prediction_sets=PredictionSets(alpha=0.1, vessel_from=0.3, background_to=0.7),
    report={"ece_before": 0.2, "ece_after": 0.05},
)


def test_apply_calibrates_first_then_thresholds() -> None:
    maps = HEAD.apply(np.array([0.05, 0.6, 0.99], dtype=np.float32))
    assert maps.probability[1] < 0.6  # softened towards 0.5
    assert maps.conformal_mask is not None
    assert maps.conformal_mask.tolist() == [0, 1, 1]
    assert maps.prediction_set is not None
    assert maps.prediction_set.tolist()[1:] == [UNCERTAIN, VESSEL]


def test_an_empty_head_leaves_probabilities_alone() -> None:
    maps = UncertaintyHead().apply(np.array([0.3]))
    assert maps.probability.tolist() == pytest.approx([0.3])
    assert maps.conformal_mask is None
    assert UncertaintyHead().empty


def test_round_trip_and_merge() -> None:
    assert UncertaintyHead.from_dict(HEAD.to_dict()) == HEAD
    update = UncertaintyHead(calibration=TemperatureScaling(2.0), report={"ece_after": 0.01})
    merged = HEAD.merged(update)
    assert merged.calibration == TemperatureScaling(2.0)
    assert merged.fnr_control is not None
    assert merged.fnr_control.alpha == HEAD.fnr_control.alpha  # type: ignore[union-attr]
    assert merged.report == {"ece_before": 0.2, "ece_after": 0.01}
    with pytest.raises(ConfigError):
        UncertaintyHead.from_dict({"fnr_control": {"alpha": 3}})


def test_a_platt_head_round_trips_as_plain_json_and_old_heads_still_load() -> None:
    platt = PlattScaling(scale=0.83, bias=-1.69, n_voxels=400_000, sampling="prevalence")
    head = UncertaintyHead(calibration=platt, fnr_control=HEAD.fnr_control)
    stored = json.loads(json.dumps(head.to_dict()))  # what a checkpoint or ONNX file holds
    assert stored["calibration"]["method"] == "platt"
    assert UncertaintyHead.from_dict(stored) == head
    old = {"calibration": {"method": "temperature", "scale": 0.5, "n_voxels": 100}}
    assert UncertaintyHead.from_dict(old).calibration == TemperatureScaling(0.5, n_voxels=100)
    with pytest.raises(ConfigError, match="isotonic"):
        UncertaintyHead.from_dict({"calibration": {"method": "isotonic"}})
    with pytest.raises(ConfigError, match="bias"):
        UncertaintyHead.from_dict({"calibration": {"method": "platt", "scale": 1.0}})


@pytest.mark.parametrize(
    "new", [PlattScaling(0.8, -1.7), TemperatureScaling(3.0)], ids=["platt", "temperature"]
)
def test_recalibrating_keeps_the_conformal_voxels(new: PlattScaling | TemperatureScaling) -> None:
    """The conformal mask and sets stored before a new calibration select the same voxels."""
    prob = np.random.default_rng(0).random(20_000).astype(np.float32)
    before = HEAD.apply(prob)
    after = HEAD.merged(UncertaintyHead(calibration=new)).apply(prob)
    assert not np.allclose(after.probability, before.probability)
    assert after.conformal_mask is not None
    assert before.conformal_mask is not None
    assert np.mean(after.conformal_mask != before.conformal_mask) < 1e-3  # float32 ties only
    assert after.prediction_set is not None
    assert before.prediction_set is not None
    assert np.mean(after.prediction_set != before.prediction_set) < 1e-3


def test_saved_checkpoint_carries_the_head_and_drops_training_state(
    checkpoint: Path, tmp_path: Path
) -> None:
    target = save_with_uncertainty(checkpoint, tmp_path / "calibrated.pt", HEAD)
    _, info = load_checkpoint(target)
    assert UncertaintyHead.from_extra(info.extra) == HEAD
    assert "inference" in info.extra
    second = save_with_uncertainty(
        target, tmp_path / "again.pt", UncertaintyHead(calibration=TemperatureScaling(3.0))
    )
    _, info = load_checkpoint(second)
    stored = UncertaintyHead.from_extra(info.extra)
    assert stored is not None
    assert info.extra[EXTRA_KEY]["calibration"]["scale"] == 3.0
    # the threshold was carried to the new calibration: the same voxels pass it
    prob = np.linspace(0.001, 0.999, 999, dtype=np.float32)
    assert np.array_equal(stored.apply(prob).conformal_mask, HEAD.apply(prob).conformal_mask)
