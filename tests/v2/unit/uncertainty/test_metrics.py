"""Calibration metrics: known values, the effect of class imbalance, the figure."""

from __future__ import annotations

import numpy as np
import pytest

from minivess.errors import DataError
from minivess.uncertainty.metrics import (
    adaptive_calibration_error,
    binary_entropy,
    brier_score,
    calibration_metrics,
    expected_calibration_error,
    reliability_curve,
    reliability_diagram,
)


def test_perfectly_calibrated_probabilities_have_near_zero_ece() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(200_000)
    y = rng.random(p.size) < p
    assert expected_calibration_error(p, y) < 0.01
    assert adaptive_calibration_error(p, y) < 0.01


def test_constant_probability_ece_is_the_gap_to_the_base_rate() -> None:
    y = np.array([1, 0, 0, 0])
    p = np.full(4, 0.75)
    assert expected_calibration_error(p, y) == pytest.approx(0.5)
    assert brier_score(p, y) == pytest.approx((0.25**2 + 3 * 0.75**2) / 4)


def test_class_balanced_ece_exposes_errors_on_the_rare_class() -> None:
    # 1 % vessels, all predicted at 0.55 (a coin flip), background confidently right
    y = np.zeros(10_000, dtype=bool)
    y[:100] = True
    p = np.where(y, 0.55, 0.0)
    report = calibration_metrics(p, y)
    assert report.ece < 0.01
    assert report.class_balanced_ece > 0.2
    assert report.vessel_fraction == pytest.approx(0.01)


def test_reliability_curve_counts_every_voxel() -> None:
    p = np.array([0.05, 0.15, 0.95, 0.97])
    mean_p, freq, counts = reliability_curve(p, np.array([0, 0, 1, 1]), n_bins=10)
    assert counts.sum() == 4
    assert freq[9] == 1.0
    assert np.isnan(mean_p[5])


def test_probabilities_outside_unit_interval_are_refused() -> None:
    with pytest.raises(DataError, match="probability-range"):
        calibration_metrics(np.array([1.2]), np.array([1]))
    with pytest.raises(DataError, match="shape"):
        calibration_metrics(np.array([0.2, 0.3]), np.array([1]))


def test_reliability_diagram_draws_one_line_per_curve() -> None:
    rng = np.random.default_rng(1)
    p = rng.random(1000)
    y = rng.random(1000) < p
    report = calibration_metrics(p, y)
    figure = reliability_diagram({"before": (p, y), "after": (p**2, y)}, reports={"before": report})
    curve_axes = figure.axes[0]
    assert len(curve_axes.get_lines()) == 3  # the diagonal and two curves


def test_entropy_is_one_bit_at_half_and_zero_when_sure() -> None:
    entropy = binary_entropy(np.array([0.0, 0.1, 0.5, 0.9, 1.0]))
    assert entropy[2] == pytest.approx(1.0)
    assert entropy[0] == 0.0
    assert entropy[4] == 0.0
    assert entropy[1] == pytest.approx(entropy[3])
    assert entropy.dtype == np.float32
