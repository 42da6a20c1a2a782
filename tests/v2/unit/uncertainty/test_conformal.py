"""Conformal FNR control and prediction sets, checked on real crops held out from calibration."""

from __future__ import annotations

import numpy as np
import pytest

from minivess.errors import ConfigError, DataError
from minivess.uncertainty.conformal import (
    BACKGROUND,
    UNCERTAIN,
    VESSEL,
    FNRControl,
    PredictionSets,
    crc_rule,
    crc_thresholds,
    false_negative_rate,
    fit_fnr_control,
    fit_prediction_sets,
    quantile_fnr,
    vessel_quantiles,
)
from minivess.uncertainty.validation import Crop, fnr_guarantee_table, tile_crops


def test_false_negative_rate_counts_missed_vessel_voxels() -> None:
    label = np.array([1, 1, 1, 1, 0])
    assert false_negative_rate(np.array([1, 1, 0, 0, 1]), label) == 0.5
    assert np.isnan(false_negative_rate(np.ones(3), np.zeros(3)))


def test_a_volume_without_vessels_cannot_calibrate() -> None:
    with pytest.raises(DataError, match="no-vessel"):
        vessel_quantiles(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)))
    with pytest.raises(ConfigError, match="alpha"):
        crc_thresholds(np.zeros((2, 10)), [1.5])


def test_smaller_alpha_gives_lower_thresholds(real_crops: list[Crop]) -> None:
    q = np.stack([vessel_quantiles(c.prob, c.label) for c in real_crops[:40]])
    t05, t10, t20 = crc_thresholds(q, [0.05, 0.1, 0.2])
    assert t05 <= t10 <= t20


def test_vectorised_rule_chooses_what_mapie_chooses(real_crops: list[Crop]) -> None:
    q = np.stack([vessel_quantiles(c.prob, c.label) for c in real_crops[::6]])
    alphas = [0.02, 0.05, 0.1, 0.2, 0.5]
    assert np.array_equal(crc_rule(quantile_fnr(q), alphas), crc_thresholds(q, alphas))
    rng = np.random.default_rng(0)
    q = np.sort(rng.beta(2, 1, size=(7, 50)), axis=1)
    assert np.array_equal(crc_rule(quantile_fnr(q), alphas), crc_thresholds(q, alphas))


def test_fnr_is_within_alpha_on_held_out_real_crops(real_crops: list[Crop]) -> None:
    table = fnr_guarantee_table(real_crops, alphas=(0.05, 0.1, 0.2), n_splits=100, seed=1)
    for row in table.itertuples():
        # CRC bounds the mean over calibration draws; allow 3 Monte-Carlo standard errors
        assert row.mean_fnr <= row.alpha + 3 * row.se, row
        assert row.inflation >= 1.0 or row.argmax_fnr <= row.alpha


def test_fitted_control_round_trips_and_masks(real_crops: list[Crop]) -> None:
    cal = real_crops[::4]
    control = fit_fnr_control([c.prob for c in cal], [c.label for c in cal], 0.1, ids=["a"])
    assert control.calibration_fnr <= 0.1
    assert FNRControl.from_dict(control.to_dict()) == control
    mask = control.mask(cal[0].prob)
    assert mask.dtype == np.uint8
    assert mask.shape == cal[0].prob.shape


def test_prediction_sets_cover_held_out_voxels(real_crops: list[Crop]) -> None:
    cal, test = real_crops[::4], real_crops[1::4]
    sets = fit_prediction_sets([c.prob for c in cal], [c.label for c in cal], 0.1)
    coverage = np.mean([sets.coverage(c.prob, c.label) for c in test])
    assert coverage >= 0.9 - 0.02
    labels = sets.labels(test[0].prob)
    assert set(np.unique(labels)) <= {BACKGROUND, VESSEL, UNCERTAIN}
    assert PredictionSets.from_dict(sets.to_dict()) == sets


def test_three_state_map_from_cut_offs() -> None:
    sets = PredictionSets(alpha=0.1, vessel_from=0.3, background_to=0.6)
    labels = sets.labels(np.array([0.1, 0.45, 0.9]))
    assert labels.tolist() == [BACKGROUND, UNCERTAIN, VESSEL]


def test_tile_crops_skips_crops_without_vessels() -> None:
    label = np.zeros((8, 8, 2), dtype=bool)
    label[0, 0, 0] = True
    crops = list(tile_crops(np.zeros(label.shape), label, size=(4, 4)))
    assert len(crops) == 1
    assert crops[0].prob.shape == (4, 4, 2)
