"""Disagreement maps: zero when members agree, bounded by the entropy, carried by predictions."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from minivess.data.io import write_nifti
from minivess.ensemble.disagreement import (
    Disagreement,
    collect_disagreement,
    mutual_information,
    on_grid,
    predictive_entropy,
    record_disagreement,
    vessel_variance,
)
from minivess.errors import DataError
from minivess.inference import Predictor


def test_agreeing_members_have_no_epistemic_uncertainty() -> None:
    same = torch.tensor([[0.5, 0.5], [0.5, 0.5]])[:, :, None].repeat(3, 1, 1)  # 3 members
    assert float(mutual_information(same)[0]) == pytest.approx(0.0, abs=1e-7)
    assert float(vessel_variance(same)[0]) == 0.0
    assert float(predictive_entropy(same)[0]) == pytest.approx(math.log(2))


def test_confident_disagreeing_members_are_epistemic() -> None:
    members = torch.tensor([[[1.0], [0.0]], [[0.0], [1.0]]])
    maps = Disagreement.from_members(members)
    assert float(maps.mutual_information[0]) == pytest.approx(math.log(2), abs=1e-6)
    assert float(maps.variance[0]) == pytest.approx(0.25)
    assert maps.mutual_information[0] <= maps.entropy[0] + 1e-6


def test_one_member_is_refused() -> None:
    with pytest.raises(DataError, match="members >= 2"):
        vessel_variance(torch.rand(1, 2, 4))


def test_an_ensemble_prediction_carries_its_members_mutual_information(
    ensemble_file: Path, member_checkpoints: list[Path], synthetic_pair: tuple[Any, Any]
) -> None:
    _, (image, _) = synthetic_pair
    predictor = Predictor.from_source(ensemble_file)
    members = torch.stack(
        [Predictor.from_source(p).probabilities(image) for p in member_checkpoints]
    )
    calls = []
    hooks = [
        member.network.register_forward_hook(lambda *_: calls.append(1))
        for member in predictor.adapter.members  # type: ignore[attr-defined]
    ]
    prediction = predictor.predict(image)
    windows_predict = len(calls)
    calls.clear()
    predictor.probabilities(image)
    for hook in hooks:
        hook.remove()
    assert windows_predict > 0
    assert windows_predict == len(calls)  # the map costs no second pass of any member
    assert prediction.mutual_information is not None
    mi = prediction.mutual_information.array
    assert mi.shape == image.array.shape
    assert mi.dtype == np.float32
    np.testing.assert_allclose(mi, mutual_information(members).numpy(), atol=1e-5)
    assert float(mi.max()) > 0.0  # two differently seeded members do disagree somewhere
    np.testing.assert_array_equal(prediction.mutual_information.affine, image.affine)


def test_a_single_model_has_no_disagreement_map(
    member_checkpoints: list[Path], synthetic_pair: tuple[Any, Any], tmp_path: Path
) -> None:
    _, (image, _) = synthetic_pair
    source = write_nifti(tmp_path / "vol.nii.gz", np.asarray(image.array, np.float32), like=image)
    predictor = Predictor.from_source(member_checkpoints[0])
    assert predictor.predict(image).mutual_information is None
    written = predictor.predict_file(source, tmp_path / "out")
    assert [p.name for p in written] == ["vol_mask.nii.gz"]


def test_maps_are_recorded_only_inside_a_collection() -> None:
    members = torch.tensor([[[0.9], [0.1]], [[0.1], [0.9]]])
    record_disagreement(members)  # nobody collecting: nothing kept, nothing raised
    with collect_disagreement() as recorded:
        record_disagreement(members)
    assert len(recorded) == 1
    assert on_grid([], (1,)) is None
    coarse = torch.arange(8, dtype=torch.float32).reshape(2, 2, 2)
    fine = on_grid([coarse], (4, 4, 4))
    assert fine is not None
    assert fine.shape == (4, 4, 4)
    assert float(fine.min()) >= 0.0
    assert float(fine.max()) <= 7.0
