"""Member weights from validation scores and fitted on validation voxels."""

from __future__ import annotations

import numpy as np
import pytest

from minivess.ensemble.weights import fit_weights, weights_from_scores
from minivess.errors import ConfigError


def test_weights_follow_scores() -> None:
    assert weights_from_scores([0.2, 0.6]) == pytest.approx([0.25, 0.75])
    assert weights_from_scores([0.2, 0.6], power=0) == pytest.approx([0.5, 0.5])
    with pytest.raises(ConfigError):
        weights_from_scores([0.5, float("nan")])


def test_fitted_weights_favour_the_informative_member() -> None:
    rng = np.random.default_rng(0)
    label = rng.random((32, 32, 8)) < 0.2
    good = np.clip(np.where(label, 0.8, 0.1) + rng.normal(0, 0.05, label.shape), 0.01, 0.99)
    noise = rng.random(label.shape)
    weights = fit_weights([good, noise], label)
    assert sum(weights) == pytest.approx(1.0)
    assert weights[0] > 0.8
