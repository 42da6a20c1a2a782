"""Evaluation figures: the right views of a volume, rendered as valid PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from minivess.errors import DataError
from minivess.evaluation import bootstrap_mean_ci
from minivess.evaluation.figures import case_figure, metrics_figure, save_png, volume_views

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_views_are_the_middle_slice_and_max_projections() -> None:
    image = np.zeros((6, 5, 4), np.float32)
    image[1, 2, 3] = 9.0
    label = np.zeros((6, 5, 4), np.uint8)
    label[2, 2, 2] = 255
    pred = np.zeros((6, 5, 4), bool)
    pred[4, 1, 0] = True
    views = volume_views(image, label, pred)
    assert views.slice_index == 2
    assert views.label_slice[2, 2]
    assert views.image_mip[1, 2] == 9.0
    assert views.pred_mip[4, 1]
    assert not views.pred_slice.any()
    assert views.label_mip.dtype == bool
    with pytest.raises(DataError, match="overlay-shape"):
        volume_views(image, label[:-1], pred)


def test_figures_render_to_valid_pngs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.random((24, 20, 6)).astype(np.float32)
    label, pred = image > 0.7, image > 0.6
    sheet = save_png(case_figure(volume_views(image, label, pred), "case a"), tmp_path / "a.png")
    table = pd.DataFrame({"dice": [0.7, 0.8, 0.9], "hd95": [4.0, float("nan"), 6.0]})
    summary = {name: bootstrap_mean_ci(table[name], n_boot=200) for name in table}
    panels = save_png(metrics_figure(table, summary, ["dice", "hd95"]), tmp_path / "m.png")
    for path in (sheet, panels):
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        height, width, channels = imread(path).shape
        assert height > 100
        assert width > 100
        assert channels in (3, 4)
