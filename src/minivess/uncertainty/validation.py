"""Empirical check of the conformal FNR guarantee on crops of labelled volumes.

The guarantee of :func:`~minivess.uncertainty.conformal.fit_fnr_control` is about the mean over
random calibration sets and new volumes, so it is checked the same way: crops are split at
random into calibration and test halves many times; each split calibrates a threshold per alpha
on its calibration crops and measures the mean FNR of its test crops. The mean over splits
should be at most alpha (up to the Monte-Carlo error of the splits), and the *price* of the
guarantee is the volume the risk-controlled mask adds over the argmax mask. Each split applies
MAPIE's CRC rule through :func:`~minivess.uncertainty.conformal.crc_rule` (its vectorised
equal, tested against MAPIE), so hundreds of splits take seconds; test FNRs are exact.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from minivess.errors import ConfigError
from minivess.uncertainty.conformal import (
    THRESHOLD_GRID,
    crc_rule,
    quantile_fnr,
    vessel_quantiles,
)

ALPHAS = (0.05, 0.1, 0.2)
"""Target FNR levels of the validation table."""


@dataclass(frozen=True)
class Crop:
    """A labelled crop: P(vessel) and the label on the same grid, and where it came from."""

    prob: np.ndarray
    label: np.ndarray
    source: str


def tile_crops(
    prob: np.ndarray,
    label: np.ndarray,
    *,
    size: tuple[int, int],
    source: str = "",
    min_vessel_fraction: float = 0.005,
) -> Iterator[Crop]:
    """Non-overlapping ``size[0] x size[1] x D`` crops (full depth) holding enough vessel.

    Crops with fewer than ``min_vessel_fraction`` vessel voxels are skipped: a crop without
    vessels has no FNR.
    """
    h, w = size
    if h < 1 or w < 1:
        raise ConfigError(f"crop size must be positive, got {size}")
    y = np.asarray(label) != 0
    for i in range(0, y.shape[0] - h + 1, h):
        for j in range(0, y.shape[1] - w + 1, w):
            window = (slice(i, i + h), slice(j, j + w))
            if y[window].mean() >= min_vessel_fraction:
                yield Crop(np.asarray(prob[window], dtype=np.float32), y[window], source)


def _exact_fnr(crop: Crop, thresholds: np.ndarray) -> np.ndarray:
    """The crop's exact FNR of the mask ``p > t`` at each threshold ``t``."""
    vessel = np.sort(crop.prob[crop.label].astype(np.float64))
    return np.searchsorted(vessel, thresholds, side="right") / vessel.size


def _predicted_voxels(crop: Crop, thresholds: np.ndarray) -> np.ndarray:
    """Voxels of the mask ``p > t`` at each threshold ``t``."""
    ordered = np.sort(crop.prob.ravel())
    return ordered.size - np.searchsorted(ordered, thresholds, side="right")


def fnr_guarantee_table(
    crops: Sequence[Crop],
    *,
    alphas: Sequence[float] = ALPHAS,
    n_splits: int = 200,
    calibration_fraction: float = 0.5,
    seed: int = 0,
) -> pd.DataFrame:
    """Repeated random calibration/test splits: mean test FNR against alpha, and its price.

    Args:
        crops: Labelled crops (each with vessel voxels).
        alphas: Target FNR levels.
        n_splits: Random splits.
        calibration_fraction: Share of crops used to calibrate in each split.
        seed: Seed of the splits.

    Returns:
        One row per alpha: ``alpha``, ``mean_fnr`` (over splits of the mean test-crop FNR),
        ``se`` (its Monte-Carlo standard error), ``p90_fnr`` (90th percentile over splits),
        ``mean_threshold``, ``argmax_fnr`` (mean FNR of ``p > 0.5``), ``inflation`` (predicted
        vessel voxels at the threshold / at 0.5), ``n_calibration``, ``n_test``, ``n_splits``.

    Raises:
        ConfigError: Fewer than 4 crops or a bad fraction.
    """
    if len(crops) < 4 or not 0.0 < calibration_fraction < 1.0:
        raise ConfigError("need at least 4 crops and a calibration fraction in (0, 1)")
    grid = THRESHOLD_GRID
    calibration_fnr = quantile_fnr(np.stack([vessel_quantiles(c.prob, c.label) for c in crops]))
    grid_with_argmax = np.append(grid, 0.5)
    predicted = np.stack([_predicted_voxels(c, grid_with_argmax) for c in crops])
    fnr_grid = np.stack([_exact_fnr(c, grid_with_argmax) for c in crops])
    rng = np.random.default_rng(seed)
    n_cal = max(2, round(calibration_fraction * len(crops)))
    rows: dict[float, list[tuple[float, float, float, float]]] = {a: [] for a in alphas}
    for _ in range(n_splits):
        order = rng.permutation(len(crops))
        cal, test = order[:n_cal], order[n_cal:]
        thresholds = crc_rule(calibration_fnr[cal], alphas, grid)
        for alpha, threshold in zip(alphas, thresholds, strict=True):
            k = int(np.argmin(np.abs(grid - threshold)))
            inflation = predicted[test, k].sum() / max(predicted[test, -1].sum(), 1)
            rows[alpha].append(
                (fnr_grid[test, k].mean(), threshold, fnr_grid[test, -1].mean(), inflation)
            )
    table = []
    for alpha, values in rows.items():
        v = np.asarray(values)
        table.append(
            {
                "alpha": alpha,
                "mean_fnr": v[:, 0].mean(),
                "se": v[:, 0].std(ddof=1) / np.sqrt(len(v)),
                "p90_fnr": np.quantile(v[:, 0], 0.9),
                "mean_threshold": v[:, 1].mean(),
                "argmax_fnr": v[:, 2].mean(),
                "inflation": v[:, 3].mean(),
                "n_calibration": n_cal,
                "n_test": len(crops) - n_cal,
                "n_splits": n_splits,
            }
        )
    return pd.DataFrame(table)
