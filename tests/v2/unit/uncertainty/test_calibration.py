"""Temperature scaling: round trip, balanced sampling, and lower ECE on held-out real crops."""

from __future__ import annotations

import numpy as np
import pytest

from minivess.errors import ConfigError, DataError
from minivess.uncertainty.calibration import TemperatureScaling, balanced_sample, fit_temperature
from minivess.uncertainty.metrics import calibration_metrics, pooled
from minivess.uncertainty.validation import Crop


def test_scale_one_is_the_identity_and_order_is_kept() -> None:
    p = np.array([0.01, 0.3, 0.5, 0.9])
    assert np.allclose(TemperatureScaling(1.0).apply(p), p, atol=1e-6)
    softened = TemperatureScaling(0.5).apply(p)
    assert np.all(np.diff(softened) > 0)
    assert softened[0] > p[0]
    assert softened[-1] < p[-1]


def test_round_trip_and_invalid_values() -> None:
    t = TemperatureScaling(0.4, n_voxels=10)
    assert TemperatureScaling.from_dict(t.to_dict()) == t
    assert t.temperature == pytest.approx(2.5)
    with pytest.raises(ConfigError):
        TemperatureScaling(0.0)
    with pytest.raises(ConfigError, match="temperature"):
        TemperatureScaling.from_dict({"method": "isotonic"})


def test_balanced_sample_draws_both_classes_equally() -> None:
    label = np.zeros((50, 50), dtype=bool)
    label[:5] = True
    _, y = balanced_sample([np.full(label.shape, 0.3)], [label], per_class=100)
    assert y.sum() == 100
    assert (1 - y).sum() == 100
    with pytest.raises(DataError, match="no vessel"):
        balanced_sample([np.zeros((4, 4))], [np.zeros((4, 4))])


def test_synthetic_overconfidence_is_undone() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=100_000) * 2
    y = rng.random(z.size) < 1 / (1 + np.exp(-z))
    p = 1 / (1 + np.exp(-3 * z))
    fitted = fit_temperature([p], [y], per_class=30_000)
    assert fitted.scale == pytest.approx(1 / 3, rel=0.1)


@pytest.fixture(scope="module")
def halves(real_crops: list[Crop]) -> tuple[list[Crop], np.ndarray, np.ndarray]:
    """Half the crops to fit on; the other half's pooled probabilities and labels."""
    rng = np.random.default_rng(0)
    order = rng.permutation(len(real_crops))[::4]  # a quarter of the crops keeps it quick
    half = len(order) // 2
    fit_on = [real_crops[i] for i in order[:half]]
    held_out = [real_crops[i] for i in order[half:]]
    return fit_on, pooled([c.prob for c in held_out]), pooled([c.label for c in held_out])


def test_balanced_calibration_lowers_class_balanced_ece_on_held_out_real_crops(
    halves: tuple[list[Crop], np.ndarray, np.ndarray],
) -> None:
    fit_on, prob, label = halves
    temperature = fit_temperature([c.prob for c in fit_on], [c.label for c in fit_on])
    before = calibration_metrics(prob, label)
    after = calibration_metrics(temperature.apply(prob), label)
    assert temperature.scale < 1.0  # the model was made over-confident
    assert after.class_balanced_ece < before.class_balanced_ece
    assert after.brier < before.brier


def test_prevalence_calibration_lowers_voxel_ece_on_held_out_real_crops(
    halves: tuple[list[Crop], np.ndarray, np.ndarray],
) -> None:
    fit_on, prob, label = halves
    temperature = fit_temperature(
        [c.prob for c in fit_on], [c.label for c in fit_on], sampling="prevalence"
    )
    before = calibration_metrics(prob, label)
    after = calibration_metrics(temperature.apply(prob), label)
    assert after.ece < before.ece
    assert after.adaptive_ece < before.adaptive_ece
