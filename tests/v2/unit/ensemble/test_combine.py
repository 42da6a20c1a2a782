"""Ensembles as adapters: combination rules, one checkpoint, the shared prediction path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from minivess.adapters import load_checkpoint
from minivess.ensemble import EnsembleAdapter, build_ensemble, combine_probabilities
from minivess.errors import ConfigError
from minivess.inference import Predictor
from minivess.metrics import VesselMetrics
from minivess.uncertainty.metrics import brier_score

MEMBERS = torch.tensor(
    [
        [[0.9, 0.4], [0.1, 0.6]],  # member 0: background, vessel
        [[0.8, 0.7], [0.2, 0.3]],  # member 1: background, background
        [[0.3, 0.45], [0.7, 0.55]],  # member 2: vessel, vessel
    ]
)


def test_mean_weighted_and_vote() -> None:
    mean = combine_probabilities(MEMBERS, "mean")
    assert torch.allclose(mean, MEMBERS.mean(0))
    weighted = combine_probabilities(MEMBERS, "weighted", [1.0, 0.0, 1.0])
    assert torch.allclose(weighted, (MEMBERS[0] + MEMBERS[2]) / 2)
    vote = combine_probabilities(MEMBERS, "vote")
    assert vote[1].tolist() == pytest.approx([1 / 3, 2 / 3])
    assert torch.allclose(vote.sum(0), torch.ones(2))


def test_config_rejects_weights_that_do_not_fit(member_checkpoints: list[Path]) -> None:
    with pytest.raises(ConfigError, match="weights"):
        build_ensemble(member_checkpoints, combine="mean", weights=[0.5, 0.5])
    with pytest.raises(ConfigError, match="one weight per member"):
        build_ensemble(member_checkpoints, combine="weighted", weights=[1.0])
    with pytest.raises(ConfigError, match="at least two"):
        build_ensemble(member_checkpoints[:1])


def test_network_returns_log_of_the_combined_patch_probabilities(
    member_checkpoints: list[Path],
) -> None:
    ensemble, _ = build_ensemble(member_checkpoints, combine="mean")
    members = [load_checkpoint(p)[0] for p in member_checkpoints]
    x = torch.rand(1, 1, 32, 32, 16)
    with torch.no_grad():
        expected = torch.stack([torch.softmax(m.forward(x), 1) for m in members]).mean(0)
        got = torch.softmax(ensemble.forward(x), 1)
    assert torch.allclose(got, expected, atol=1e-5)


def test_one_checkpoint_predicts_through_the_shared_path(
    ensemble_file: Path, member_checkpoints: list[Path], synthetic_pair: tuple[Any, Any]
) -> None:
    _, (image, _) = synthetic_pair
    adapter, info = load_checkpoint(ensemble_file)
    assert isinstance(adapter, EnsembleAdapter)
    assert info.adapter == "ensemble"
    assert [m["name"] for m in info.config["members"]] == [str(p) for p in member_checkpoints]
    ensemble = Predictor.from_source(ensemble_file).probabilities(image)
    members = [Predictor.from_source(p).probabilities(image) for p in member_checkpoints]
    assert torch.allclose(ensemble, torch.stack(members).mean(0), atol=1e-6)


def test_ensemble_is_at_least_as_good_as_its_mean_member(
    ensemble_file: Path, member_checkpoints: list[Path], synthetic_pair: tuple[Any, Any]
) -> None:
    _, (image, label) = synthetic_pair
    truth = np.asarray(label.array) != 0

    def scores(source: Path) -> tuple[float, float]:
        prob = Predictor.from_source(source).probabilities(image)[1].numpy()
        metrics = VesselMetrics(tolerance_um=2.0)
        pred = torch.from_numpy(prob > 0.5)[None]
        metrics.update(pred, torch.from_numpy(truth)[None], spacing=image.spacing)
        return float(metrics.per_volume()["dice"][0]), brier_score(prob, truth)

    ensemble_dice, ensemble_brier = scores(ensemble_file)
    member_scores = np.array([scores(p) for p in member_checkpoints])
    assert ensemble_brier <= member_scores[:, 1].mean()  # guaranteed by convexity
    assert ensemble_dice >= member_scores[:, 0].mean()


def test_members_must_share_preprocessing(member_checkpoints: list[Path], tmp_path: Path) -> None:
    adapter, info = load_checkpoint(member_checkpoints[1])
    extra = {**info.extra, "preprocessing": {"percentile_lower": 0.5, "percentile_upper": 99.0}}
    other = adapter.save_checkpoint(tmp_path / "other.pt", extra=extra)
    with pytest.raises(ConfigError, match="normalise intensities differently"):
        build_ensemble([member_checkpoints[0], other])


def test_a_fresh_process_predicts_with_an_ensemble_through_the_cli(
    ensemble_file: Path, synthetic_pair: tuple[Any, Any], tmp_path: Path
) -> None:
    """The ``ensemble`` adapter is found through its entry point, with nothing imported first."""
    import subprocess
    import sys

    from minivess.data.io import read_volume, write_nifti

    _, (image, _) = synthetic_pair
    source = write_nifti(tmp_path / "vol.nii.gz", np.asarray(image.array, np.float32), like=image)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "minivess.cli.main",
            "predict",
            str(source),
            "--model",
            str(ensemble_file),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    mask = read_volume(tmp_path / "out" / "vol_mask.nii.gz")
    expected = Predictor.from_source(ensemble_file).predict(read_volume(source))
    assert np.array_equal(mask.array, expected.mask.array)
    mi = read_volume(tmp_path / "out" / "vol_mi.nii.gz")  # the members' disagreement
    assert expected.mutual_information is not None
    np.testing.assert_allclose(mi.array, expected.mutual_information.array, atol=1e-6)
    assert str(tmp_path / "out" / "vol_mi.nii.gz") in done.stdout
