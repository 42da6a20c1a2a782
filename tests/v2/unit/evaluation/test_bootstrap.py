"""Percentile bootstrap of a mean: coverage, determinism, NaN handling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from minivess.errors import ConfigError
from minivess.evaluation import bootstrap_mean_ci


def test_interval_contains_the_mean_and_is_fixed_by_the_seed() -> None:
    values = np.random.default_rng(3).beta(8, 2, size=12)
    first = bootstrap_mean_ci(values, seed=7)
    assert first.mean == pytest.approx(values.mean())
    assert first.ci_low < first.mean < first.ci_high
    assert bootstrap_mean_ci(values, seed=7) == first
    assert bootstrap_mean_ci(values, seed=8) != first
    assert (first.n, first.n_nan) == (12, 0)


def test_width_matches_the_normal_theory_interval() -> None:
    values = np.random.default_rng(0).normal(0.8, 0.1, size=400)
    stats = bootstrap_mean_ci(values, n_boot=4000, seed=0)
    expected = 2 * 1.96 * values.std(ddof=1) / math.sqrt(values.size)
    assert stats.ci_high - stats.ci_low == pytest.approx(expected, rel=0.1)
    narrower = bootstrap_mean_ci(values, confidence=0.5, n_boot=4000, seed=0)
    assert narrower.ci_high - narrower.ci_low < stats.ci_high - stats.ci_low


def test_nan_volumes_are_left_out_and_counted() -> None:
    stats = bootstrap_mean_ci([1.0, float("nan"), 3.0, float("nan")], seed=0)
    assert (stats.mean, stats.n, stats.n_nan) == (2.0, 2, 2)
    assert 1.0 <= stats.ci_low <= stats.ci_high <= 3.0
    assert stats.to_dict()["mean"] == 2.0


def test_degenerate_samples() -> None:
    single = bootstrap_mean_ci([0.5], seed=0)
    assert (single.mean, single.ci_low, single.ci_high) == (0.5, 0.5, 0.5)
    none = bootstrap_mean_ci([float("nan")] * 3, seed=0)
    assert math.isnan(none.mean)
    assert (none.n, none.n_nan) == (0, 3)
    assert none.to_dict() == {"mean": None, "ci_low": None, "ci_high": None, "n": 0, "n_nan": 3}


def test_long_samples_are_resampled_in_bounded_chunks() -> None:
    values = np.random.default_rng(1).random(20_000)
    stats = bootstrap_mean_ci(values, n_boot=2_000, seed=0)
    assert stats.ci_low < values.mean() < stats.ci_high
    assert bootstrap_mean_ci(values, n_boot=2_000, seed=0) == stats


@pytest.mark.parametrize(("n_boot", "confidence"), [(0, 0.95), (100, 1.0), (100, 0.0)])
def test_invalid_settings_are_config_errors(n_boot: int, confidence: float) -> None:
    with pytest.raises(ConfigError):
        bootstrap_mean_ci([1.0, 2.0], n_boot=n_boot, confidence=confidence)
