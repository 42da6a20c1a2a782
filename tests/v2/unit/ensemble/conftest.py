"""Two tiny SegResNets trained briefly, with different seeds, on a synthetic vessel volume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from minivess.data.synthetic import make_vessel_volume
from minivess.data.transforms import normalise_intensity

TINY_SEGRESNET = {"init_filters": 4, "num_groups": 4, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]}
PREDICTION_EXTRA = {
    "preprocessing": {"percentile_lower": 1.0, "percentile_upper": 99.8},
    "inference": {
        "roi_size": [64, 64, 16],
        "overlap": 0.25,
        "sw_batch_size": 1,
        "precision": "fp32",
        "blend": "constant",
    },
}


def _train(seed: int, image: torch.Tensor, label: torch.Tensor, steps: int) -> Any:
    from minivess.adapters import build_adapter

    torch.manual_seed(seed)
    adapter = build_adapter("segresnet", TINY_SEGRESNET)
    optimiser = torch.optim.Adam(adapter.network.parameters(), lr=1e-2)
    weight = torch.tensor([1.0, 4.0])
    for _ in range(steps):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(adapter.forward(image), label, weight=weight)
        loss.backward()
        optimiser.step()
    return adapter


@pytest.fixture(scope="session")
def synthetic_pair() -> tuple[Any, Any]:
    """A training and a held-out synthetic ``(image, label)`` volume pair (48 x 48 x 16)."""
    return make_vessel_volume((48, 48, 16), seed=1), make_vessel_volume((48, 48, 16), seed=2)


@pytest.fixture(scope="session")
def member_checkpoints(
    tmp_path_factory: pytest.TempPathFactory, synthetic_pair: tuple[Any, Any]
) -> list[Path]:
    """Checkpoints of two members trained 15 steps each from different seeds."""
    (image, label), _ = synthetic_pair
    x = normalise_intensity(np.asarray(image.array, np.float32)[None], (1.0, 99.8))[None]
    y = torch.from_numpy((np.asarray(label.array) != 0).astype(np.int64))[None]
    folder = tmp_path_factory.mktemp("members")
    paths = []
    for seed in (0, 1):
        adapter = _train(seed, x, y, steps=15)
        paths.append(adapter.save_checkpoint(folder / f"seed{seed}.pt", extra=PREDICTION_EXTRA))
    return paths


@pytest.fixture(scope="session")
def ensemble_file(member_checkpoints: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two members as one mean-ensemble checkpoint."""
    from minivess.ensemble import build_ensemble, save_ensemble

    ensemble, extra = build_ensemble(member_checkpoints, combine="mean")
    return save_ensemble(ensemble, extra, tmp_path_factory.mktemp("ens") / "ensemble.pt")
