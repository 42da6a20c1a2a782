"""Masks for the metric tests: smooth random blobs, and real VesselNN label crops."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from minivess.data.io import parse_ome_spacing, read_tiff

BlobFactory = Callable[..., torch.Tensor]

REAL_CASE = "poon2015_BBB_Leakage"


def _blobs(shape: tuple[int, ...], seed: int, fraction: float = 0.15) -> np.ndarray:
    """Vessel-like random masks: thresholded smoothed noise, about ``fraction`` foreground."""
    noise = ndi.gaussian_filter(np.random.default_rng(seed).normal(size=shape), sigma=(2, 2, 1))
    return noise > np.quantile(noise, 1 - fraction)


@pytest.fixture
def make_blobs() -> BlobFactory:
    """``make_blobs(batch, shape=(24, 24, 8), seed=0)`` -> (B, H, W, D) bool tensor."""

    def make(batch: int, shape: tuple[int, int, int] = (24, 24, 8), seed: int = 0) -> torch.Tensor:
        return torch.from_numpy(np.stack([_blobs(shape, seed * 1000 + i) for i in range(batch)]))

    return make


@pytest.fixture(scope="session")
def real_label(vesselnn_dir: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A 96 x 96 x Z crop of a real VesselNN label (bool, (H, W, D)) and its spacing in um."""
    label_path = next((vesselnn_dir / "labels").glob(f"{REAL_CASE}_*.tif"))
    xml = (vesselnn_dir / "metadata" / f"{REAL_CASE}_metadata.xml.txt").read_bytes()
    spacing = parse_ome_spacing(xml)
    assert spacing is not None
    label = read_tiff(label_path, spacing=spacing).array[200:296, 200:296, :] != 0
    assert 0.01 < label.mean() < 0.5, "crop should hold a fair share of vessel"
    return label, spacing


@pytest.fixture(scope="session")
def real_pairs(
    real_label: tuple[np.ndarray, tuple[float, float, float]],
) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float, float]]:
    """(preds, target, spacing): the real crop against an eroded, a dilated and a shifted copy."""
    label, spacing = real_label
    preds = np.stack(
        [
            ndi.binary_erosion(label),
            ndi.binary_dilation(label, iterations=2),
            np.roll(label, shift=(3, 0, 1), axis=(0, 1, 2)),
        ]
    )
    target = np.stack([label] * len(preds))
    return torch.from_numpy(preds), torch.from_numpy(target), spacing
