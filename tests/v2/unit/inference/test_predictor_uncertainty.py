"""The prediction path applies the calibration and conformal results stored with a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from minivess.data.io import write_nifti
from minivess.data.synthetic import make_vessel_volume
from minivess.inference import Predictor
from minivess.uncertainty.calibration import TemperatureScaling
from minivess.uncertainty.conformal import UNCERTAIN, FNRControl, PredictionSets
from minivess.uncertainty.head import UncertaintyHead, save_with_uncertainty

HEAD = UncertaintyHead(
    calibration=TemperatureScaling(0.5),
    fnr_control=FNRControl(alpha=0.1, threshold=0.3, n_calibration=4),
    prediction_sets=PredictionSets(alpha=0.1, vessel_from=0.45, background_to=0.55),
)


@pytest.fixture
def uq_checkpoint(checkpoint: Path, tmp_path: Path) -> Path:
    return save_with_uncertainty(checkpoint, tmp_path / "uq.pt", HEAD)


def test_stored_head_calibrates_and_adds_conformal_maps(
    checkpoint: Path, uq_checkpoint: Path
) -> None:
    image, _ = make_vessel_volume((32, 32, 8), seed=0)
    plain = Predictor.from_source(checkpoint).predict(image)
    assert plain.conformal_mask is None
    assert not plain.calibrated

    prediction = Predictor.from_source(uq_checkpoint).predict(image)
    raw = plain.probability.array
    assert prediction.calibrated
    assert np.allclose(prediction.probability.array, HEAD.apply(raw).probability, atol=1e-6)
    assert np.array_equal(prediction.mask.array, plain.mask.array)  # argmax unchanged
    assert prediction.conformal_mask is not None
    expected = (prediction.probability.array > 0.3).astype(np.uint8)
    assert np.array_equal(prediction.conformal_mask.array, expected)
    assert prediction.prediction_set is not None
    sets = prediction.prediction_set.array
    assert sets.shape == image.shape
    in_between = (prediction.probability.array > 0.45) & (prediction.probability.array < 0.55)
    assert np.all(sets[in_between] == UNCERTAIN)
    assert np.array_equal(prediction.prediction_set.affine, image.affine)


def test_predict_file_writes_the_conformal_outputs(uq_checkpoint: Path, tmp_path: Path) -> None:
    image, _ = make_vessel_volume((32, 32, 8), seed=0)
    source = write_nifti(tmp_path / "stack.nii.gz", np.asarray(image.array), like=image)
    written = Predictor.from_source(uq_checkpoint).predict_file(source, tmp_path / "out")
    assert [p.name for p in written] == [
        "stack_mask.nii.gz",
        "stack_conformal.nii.gz",
        "stack_sets.nii.gz",
    ]
