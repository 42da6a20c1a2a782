"""Disagreement maps: zero when members agree, mutual information bounded by the entropy."""

from __future__ import annotations

import math

import pytest
import torch

from minivess.ensemble.disagreement import (
    Disagreement,
    mutual_information,
    predictive_entropy,
    vessel_variance,
)
from minivess.errors import DataError


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
