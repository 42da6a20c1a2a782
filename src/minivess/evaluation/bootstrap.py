"""Percentile-bootstrap confidence intervals of a mean over volumes.

Volumes are the unit of resampling: a dataset of 70 volumes gives 70 values per metric, and the
interval says how much the mean would move with another draw of 70 volumes from the same
population. NaN values (metrics undefined for a volume, e.g. HD95 with an empty prediction) are
left out and counted, never imputed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from minivess.errors import ConfigError

N_BOOT = 10_000
CONFIDENCE = 0.95
#: Resampled values drawn per chunk: bounds memory at ~32 MiB whatever the sample size.
_CHUNK_VALUES = 1 << 22


@dataclass(frozen=True)
class MetricSummary:
    """Mean of one metric over volumes with its bootstrap interval.

    Args:
        mean: Mean over the volumes with a defined value (NaN if none).
        ci_low: Lower bound of the percentile-bootstrap interval (NaN if no value).
        ci_high: Upper bound.
        n: Volumes with a defined value (used for the mean and the interval).
        n_nan: Volumes whose value is NaN (left out).
    """

    mean: float
    ci_low: float
    ci_high: float
    n: int
    n_nan: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (NaN becomes ``None``)."""
        return {
            k: None if isinstance(v, float) and math.isnan(v) else v
            for k, v in asdict(self).items()
        }


def bootstrap_mean_ci(
    values: Any,
    *,
    n_boot: int = N_BOOT,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> MetricSummary:
    """Mean of ``values`` and its percentile-bootstrap confidence interval.

    Each of ``n_boot`` resamples draws ``n`` values with replacement from the ``n`` defined
    values; the interval is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles
    of the resampled means. Resampling is vectorised with NumPy and fixed by ``seed``.

    Args:
        values: One value per volume (array-like of floats; NaN = undefined).
        n_boot: Number of bootstrap resamples.
        confidence: Coverage of the interval, in (0, 1).
        seed: Seed of the resampling; the same values and seed give the same interval.

    Returns:
        The summary; with one defined value the interval is that value, with none all NaN.

    Raises:
        ConfigError: ``n_boot < 1`` or ``confidence`` outside (0, 1).

    Example:
        >>> s = bootstrap_mean_ci([0.7, 0.8, float("nan"), 0.9], seed=0)
        >>> round(s.mean, 3), s.n, s.n_nan, s.ci_low <= s.mean <= s.ci_high
        (0.8, 3, 1, True)
    """
    check_bootstrap(n_boot, confidence)
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    defined = array[~np.isnan(array)]
    n, n_nan = int(defined.size), int(array.size - defined.size)
    if n == 0:
        return MetricSummary(math.nan, math.nan, math.nan, 0, n_nan)
    means = resampled_means(defined, n_boot=n_boot, seed=seed)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return MetricSummary(float(defined.mean()), float(low), float(high), n, n_nan)


def check_bootstrap(n_boot: int, confidence: float) -> None:
    """Refuse bootstrap settings that cannot give an interval.

    Raises:
        ConfigError: ``n_boot < 1`` or ``confidence`` outside (0, 1).
    """
    if n_boot < 1:
        raise ConfigError(f"n_boot must be at least 1, got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence}")


def resampled_means(values: np.ndarray, *, n_boot: int, seed: int) -> np.ndarray:
    """Means of ``n_boot`` resamples with replacement of ``values`` (1D, no NaN).

    Resamples are drawn in chunks so memory stays bounded for long inputs; the result depends
    only on ``values``, ``n_boot`` and ``seed``.
    """
    rng = np.random.default_rng(seed)
    n = values.size
    per_chunk = max(1, _CHUNK_VALUES // n)
    means = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, per_chunk):
        stop = min(n_boot, start + per_chunk)
        indices = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = values[indices].mean(axis=1)
    return means
