"""Model cards: every number comes from the checkpoint or its evaluation summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minivess.adapters import load_checkpoint
from minivess.errors import DataError
from minivess.tracking.model_card import model_card, write_model_card
from minivess.uncertainty.calibration import TemperatureScaling
from minivess.uncertainty.conformal import FNRControl
from minivess.uncertainty.head import UncertaintyHead, save_with_uncertainty

SUMMARY = {
    "n_volumes": 2,
    "metrics": {"dice": {"mean": 0.8, "ci_low": 0.7, "ci_high": 0.9, "n": 2}},
    "settings": {"confidence": 0.95},
    "data": {"subset": "val", "fold": 0},
}


def test_card_of_a_plain_checkpoint_says_what_is_missing(checkpoint: Path) -> None:
    _, info = load_checkpoint(checkpoint)
    card = model_card(info, name="tiny")
    assert card.startswith("# Model card: tiny")
    assert "Calibration**: none" in card
    assert "Conformal FNR control**: not fitted" in card
    assert "No evaluation was attached" in card
    assert "## Known limitations" in card


def test_card_reports_uncertainty_and_metrics(checkpoint: Path, tmp_path: Path) -> None:
    head = UncertaintyHead(
        calibration=TemperatureScaling(0.5, n_voxels=10),
        fnr_control=FNRControl(0.1, 0.25, 12, ("vol_a", "vol_b")),
        report={
            "calibration_before": {
                "ece": 0.2,
                "adaptive_ece": 0.2,
                "class_balanced_ece": 0.3,
                "brier": 0.1,
            },
            "calibration_after": {
                "ece": 0.05,
                "adaptive_ece": 0.06,
                "class_balanced_ece": 0.1,
                "brier": 0.08,
            },
            "conformal_heldout_fnr": 0.087,
            "conformal_heldout_crops": 30,
            "conformal_volume_inflation": 1.4,
        },
    )
    model = save_with_uncertainty(checkpoint, tmp_path / "m.pt", head)
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps(SUMMARY))
    card = write_model_card(model, tmp_path / "card.md", evaluation_summary=summary).read_text()
    assert "T = 2.000" in card
    assert "| after | 0.05 | 0.06 | 0.1 | 0.08 |" in card
    assert "P(vessel) > 0.250" in card
    assert "vol_a, vol_b" in card
    assert "mean FNR 0.0870" in card
    assert "| dice | 0.8 | 0.7 | 0.9 | 2 |" in card


def test_unreadable_summary_is_named(checkpoint: Path, tmp_path: Path) -> None:
    bad = tmp_path / "summary.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="summary"):
        write_model_card(checkpoint, tmp_path / "card.md", evaluation_summary=bad)
