"""Figures: curves from a history, and TP/FP/FN overlays of predictions on held-out slices."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image

from minivess.errors import DataError
from minivess.tracking import TrackedRun, log_overlays
from minivess.tracking.plots import (
    FN_COLOUR,
    FP_COLOUR,
    TP_COLOUR,
    loss_figure,
    metrics_figure,
    overlay_figure,
    overlay_rgb,
)

HISTORY = [
    {"epoch": 1.0, "loss": 0.9, "lr": 1e-3, "epoch_time_s": 1.0},
    {"epoch": 2.0, "loss": 0.7, "lr": 9e-4, "epoch_time_s": 1.0, "val_dice": 0.5},
    {"epoch": 3.0, "loss": 0.6, "lr": 8e-4, "epoch_time_s": 1.0},
    {"epoch": 4.0, "loss": 0.5, "lr": 7e-4, "epoch_time_s": 1.0, "val_dice": 0.6},
]


def test_curves_plot_every_epoch_and_only_validated_epochs() -> None:
    loss_line = loss_figure(HISTORY).axes[0].lines[0]
    assert list(loss_line.get_xdata()) == [1.0, 2.0, 3.0, 4.0]
    assert list(loss_line.get_ydata()) == [0.9, 0.7, 0.6, 0.5]
    figure = metrics_figure(HISTORY)
    assert figure is not None
    (dice,) = figure.axes[0].lines
    assert list(dice.get_xdata()) == [2.0, 4.0]
    assert list(dice.get_ydata()) == [0.5, 0.6]
    assert metrics_figure(HISTORY[:1]) is None


def test_overlay_colours_each_outcome_and_keeps_negatives_grey() -> None:
    image = np.linspace(0, 1, 16).reshape(4, 4)
    label = np.zeros((4, 4), dtype=np.uint8)
    prediction = np.zeros((4, 4), dtype=np.uint8)
    label[0, 0] = prediction[0, 0] = 1  # TP
    prediction[1, 1] = 1  # FP
    label[2, 2] = 1  # FN
    rgb = overlay_rgb(image, label, prediction)
    assert rgb.shape == (4, 4, 3)
    assert rgb.dtype == np.uint8
    for (y, x), colour in (((0, 0), TP_COLOUR), ((1, 1), FP_COLOUR), ((2, 2), FN_COLOUR)):
        assert int(np.argmax(rgb[y, x])) == int(np.argmax(colour))
    r, g, b = rgb[3, 3].astype(int)
    assert r == g == b


def test_overlay_figure_shows_evenly_spread_slices_and_the_dice() -> None:
    shape = (8, 6, 10)
    label = np.zeros(shape, dtype=np.uint8)
    label[2:4, 2:4, :] = 1
    figure = overlay_figure(np.random.default_rng(0).random(shape), label, label, title="case1")
    assert [ax.get_title() for ax in figure.axes] == ["z = 2", "z = 4", "z = 7"]
    assert figure.get_suptitle() == "case1  Dice 1.000"
    assert figure.axes[0].images[0].get_array().shape == (6, 8, 3)  # rows are y


def test_overlay_rejects_mismatched_shapes() -> None:
    with pytest.raises(DataError, match="overlay-shape"):
        overlay_figure(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))


def test_log_overlays_writes_one_png_per_volume(tracking: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = [rng.random((1, 16, 12, 6)), rng.random((20, 16, 4))]
    labels = [(im > 0.7).astype(np.uint8) for im in images]
    predictions = [(im > 0.6).astype(np.uint8) for im in images]
    with TrackedRun("exp", log_system_metrics=False) as run:
        paths = log_overlays(run, images, labels, predictions, ["vol_a", "vol_b"])
    assert paths == ["overlays/vol_a.png", "overlays/vol_b.png"]
    local = mlflow.artifacts.download_artifacts(
        run_id=run.run_id, artifact_path="overlays", dst_path=str(tmp_path)
    )
    for name in ("vol_a.png", "vol_b.png"):
        with Image.open(Path(local) / name) as png:
            assert png.format == "PNG"
            assert png.size[0] > 100


def test_log_overlays_needs_one_of_each_per_volume(tracking: str) -> None:
    with pytest.raises(DataError, match="overlay-count"):
        log_overlays(TrackedRun("exp"), [np.zeros((4, 4, 4))], [], [], ["a"])
