"""Which uncertainty outputs a served model can give, and the maps and numbers it gives."""

from __future__ import annotations

from http import HTTPStatus

import numpy as np
import pytest

from minivess.data.volume import Volume, affine_from_spacing
from minivess.inference import ModelInfo, Prediction
from minivess.serving.outputs import (
    OutputUnavailable,
    output_volume,
    require_output,
    uncertainty_summary,
)
from minivess.uncertainty import FNRControl, PredictionSets, TemperatureScaling, UncertaintyHead

FULL = UncertaintyHead(
    calibration=TemperatureScaling(scale=0.5),
    fnr_control=FNRControl(alpha=0.1, threshold=0.3, n_calibration=4),
    prediction_sets=PredictionSets(alpha=0.1, vessel_from=0.7, background_to=0.2),
)


@pytest.mark.parametrize(
    ("head", "output", "rule"),
    [
        (None, "conformal", "no-conformal"),
        (None, "prediction_sets", "no-prediction-sets"),
        (UncertaintyHead(calibration=TemperatureScaling(0.5)), "conformal", "no-conformal"),
        (UncertaintyHead(fnr_control=FULL.fnr_control), "prediction_sets", "no-prediction-sets"),
    ],
)
def test_a_map_the_model_cannot_give_is_refused_with_the_command_that_adds_it(
    head: UncertaintyHead | None, output: str, rule: str
) -> None:
    with pytest.raises(OutputUnavailable) as refused:
        require_output(head, output, "runs/best.pt")  # type: ignore[arg-type]
    assert refused.value.status == HTTPStatus.CONFLICT
    assert str(refused.value).startswith(f"[{rule}] the served model runs/best.pt")
    assert "minivess conformal -m runs/best.pt" in str(refused.value)


@pytest.mark.parametrize("output", ["conformal", "prediction_sets", "entropy"])
def test_a_model_with_a_full_head_gives_every_map(output: str) -> None:
    require_output(FULL, output, "uq.pt")  # type: ignore[arg-type]


def test_entropy_needs_no_head() -> None:
    require_output(None, "entropy", "plain.pt")


def _prediction(head: UncertaintyHead | None) -> Prediction:
    raw = np.array([0.0, 0.1, 0.25, 0.5, 0.8, 0.95, 1.0, 0.4], dtype=np.float32).reshape(2, 2, 2)
    like = Volume(raw, affine_from_spacing((0.5, 0.5, 2.0)), source="v.nii.gz")
    maps = head.apply(raw) if head is not None else None
    return Prediction(
        mask=like.with_array((raw > 0.5).astype(np.uint8)),
        probability=like.with_array(maps.probability if maps else raw),
        seconds=0.1,
        model=ModelInfo(source="uq.pt", adapter="segresnet"),
        conformal_mask=like.with_array(maps.conformal_mask) if maps else None,
        prediction_set=like.with_array(maps.prediction_set) if maps else None,
        calibrated=head is not None,
    )


def test_entropy_is_in_bits_on_the_input_grid() -> None:
    prediction = _prediction(None)
    entropy = output_volume(prediction, "entropy")
    assert entropy.array.dtype == np.float32
    np.testing.assert_array_equal(entropy.affine, prediction.probability.affine)
    p = prediction.probability.array.ravel()
    got = entropy.array.ravel()
    assert got[p == 0.5] == pytest.approx([1.0])
    assert got[(p == 0.0) | (p == 1.0)] == pytest.approx([0.0, 0.0])
    assert got[p == 0.25] == pytest.approx([-(0.25 * np.log2(0.25) + 0.75 * np.log2(0.75))])


def test_conformal_maps_are_the_predictions_own() -> None:
    prediction = _prediction(FULL)
    assert output_volume(prediction, "conformal") is prediction.conformal_mask
    assert output_volume(prediction, "prediction_sets") is prediction.prediction_set
    with pytest.raises(OutputUnavailable, match=r"^\[no-conformal\]"):
        output_volume(_prediction(None), "conformal")


def test_summary_counts_the_conformal_mask_and_the_uncertain_voxels() -> None:
    prediction = _prediction(FULL)
    assert prediction.conformal_mask is not None
    assert prediction.prediction_set is not None
    summary = uncertainty_summary(prediction, FULL)
    conformal = int(prediction.conformal_mask.array.sum())
    assert summary == {
        "calibrated": True,
        "conformal": {
            "alpha": 0.1,
            "threshold": 0.3,
            "vessel_voxels": conformal,
            "vessel_fraction": conformal / 8,
        },
        "uncertain_fraction": float(np.mean(prediction.prediction_set.array == 2)),
    }
    assert 0 < summary["uncertain_fraction"] < 1


def test_summary_of_a_plain_model_has_no_conformal_numbers() -> None:
    assert uncertainty_summary(_prediction(None), None) == {
        "calibrated": False,
        "conformal": None,
        "uncertain_fraction": None,
    }
