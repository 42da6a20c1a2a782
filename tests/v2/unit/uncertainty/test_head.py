"""The uncertainty entry of a checkpoint: stored as plain values, read back, applied."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from minivess.adapters import load_checkpoint
from minivess.errors import ConfigError
from minivess.uncertainty.calibration import TemperatureScaling
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
    assert merged.fnr_control == HEAD.fnr_control
    assert merged.report == {"ece_before": 0.2, "ece_after": 0.01}
    with pytest.raises(ConfigError):
        UncertaintyHead.from_dict({"fnr_control": {"alpha": 3}})


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
    assert info.extra[EXTRA_KEY]["fnr_control"]["threshold"] == 0.2
    assert info.extra[EXTRA_KEY]["calibration"]["scale"] == 3.0
