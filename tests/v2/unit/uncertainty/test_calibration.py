"""Temperature and Platt scaling: round trips, sampling, and lower ECE on held-out real crops."""

from __future__ import annotations

import numpy as np
import pytest

from minivess.errors import ConfigError, DataError
from minivess.uncertainty.calibration import (
    PlattScaling,
    Sampling,
    TemperatureScaling,
    balanced_sample,
    calibration_from_dict,
    fit_platt,
    fit_temperature,
)
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


def test_platt_round_trip_inverse_and_invalid_values() -> None:
    platt = PlattScaling(0.8, -1.5, n_voxels=10, sampling="balanced", prior_shift=-2.0)
    assert PlattScaling.from_dict(platt.to_dict()) == platt
    assert calibration_from_dict(platt.to_dict()) == platt
    assert calibration_from_dict(TemperatureScaling(0.4).to_dict()) == TemperatureScaling(0.4)
    p = np.array([0.01, 0.2, 0.5, 0.97])
    assert np.allclose(platt.inverse(platt.apply(p)), p, atol=1e-5)
    assert np.all(np.diff(platt.apply(p)) > 0)  # order kept: argmax ranking and thresholds
    assert platt.apply(np.array([0.5]))[0] < 0.5  # the negative bias moves P = 0.5 down
    with pytest.raises(ConfigError, match="positive"):
        PlattScaling(-1.0, 0.0)
    with pytest.raises(ConfigError, match="unknown method"):
        calibration_from_dict({"method": "isotonic"})


def _synthetic_offset(n: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """Scores whose true vessel log-odds are ``0.7 * logit(p) - 1`` (sparse vessels)."""
    rng = np.random.default_rng(1)
    z = rng.normal(size=n) * 2
    y = rng.random(n) < 1 / (1 + np.exp(-(0.7 * z - 1.0)))
    return 1 / (1 + np.exp(-z)), y


def test_platt_recovers_slope_and_intercept() -> None:
    p, y = _synthetic_offset()
    fitted = fit_platt([p], [y], per_class=50_000, sampling="prevalence")
    assert fitted.scale == pytest.approx(0.7, abs=0.05)
    assert fitted.bias == pytest.approx(-1.0, abs=0.1)


def test_a_balanced_platt_fit_is_shifted_back_to_the_prior() -> None:
    """Balanced sampling changes only the intercept, by the log-odds of the prevalence."""
    p, y = _synthetic_offset()
    corrected = fit_platt([p], [y], per_class=20_000, sampling="balanced")
    raw = fit_platt([p], [y], per_class=20_000, sampling="balanced", correct_prior=False)
    prevalence = y.mean()
    assert corrected.prior_shift == pytest.approx(np.log(prevalence / (1 - prevalence)))
    assert corrected.bias == pytest.approx(-1.0, abs=0.15)
    assert raw.bias - corrected.bias == pytest.approx(-corrected.prior_shift)
    assert corrected.scale == pytest.approx(0.7, abs=0.05)


@pytest.fixture(scope="module")
def subset(real_crops: list[Crop]) -> list[Crop]:
    """A random quarter of the real crops (keeps the fits quick)."""
    order = np.random.default_rng(0).permutation(len(real_crops))[::4]
    return [real_crops[i] for i in order]


def _offset_halves(crops: list[Crop], offset: float) -> tuple[list[Crop], np.ndarray, np.ndarray]:
    """The crops rescored with the logistic model's logit (undoing conftest's OVERCONFIDENCE of
    4) plus ``offset``: a model that predicts too much (> 0) or too little vessel everywhere.
    Half to fit on; the other half's pooled probabilities and labels.
    """
    scored = []
    for crop in crops:
        p = np.clip(crop.prob.astype(np.float64), 1e-7, 1 - 1e-7)
        z = np.log(p / (1 - p)) / 4.0 + offset
        scored.append(Crop((1 / (1 + np.exp(-z))).astype(np.float32), crop.label, crop.source))
    half = len(scored) // 2
    held_out = scored[half:]
    return scored[:half], pooled([c.prob for c in held_out]), pooled([c.label for c in held_out])


@pytest.mark.parametrize(
    ("offset", "sampling"), [(2.5, "prevalence"), (-1.5, "balanced")], ids=["over", "under"]
)
def test_platt_lowers_held_out_ece_of_a_biased_model_where_temperature_cannot(
    subset: list[Crop], offset: float, sampling: Sampling
) -> None:
    fit_on, prob, label = _offset_halves(subset, offset)
    probs, labels = [c.prob for c in fit_on], [c.label for c in fit_on]
    before = calibration_metrics(prob, label)
    platt = fit_platt(probs, labels, sampling=sampling)
    temperature = fit_temperature(probs, labels, sampling=sampling)
    with_platt = calibration_metrics(platt.apply(prob), label)
    with_temperature = calibration_metrics(temperature.apply(prob), label)
    assert np.sign(platt.bias) == -np.sign(offset)  # the intercept takes the offset out
    assert with_platt.ece < 0.5 * before.ece
    assert with_platt.adaptive_ece < 0.5 * before.adaptive_ece
    assert with_platt.brier < before.brier
    assert with_temperature.ece > 0.9 * before.ece  # a temperature cannot move the offset
    assert with_platt.ece < 0.5 * with_temperature.ece
    assert with_platt.brier < with_temperature.brier
