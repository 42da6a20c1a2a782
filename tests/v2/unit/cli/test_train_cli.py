"""``minivess train`` on a fresh clone prepares the default VesselNN dataset by itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from minivess.cli.train import _ensure_prepared
from minivess.config.experiment import compose
from minivess.config.settings import get_settings
from minivess.data.splits import load_splits


@pytest.mark.slow
def test_first_run_prepares_vesselnn_with_splits(
    vesselnn_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINIVESS_DATA__ROOT", str(tmp_path / "prepared"))
    monkeypatch.setenv("MINIVESS_VESSELNN_DIR", str(vesselnn_dir))
    get_settings(reload=True)
    try:
        cfg = compose()
        assert not Path(cfg.data.dataset_dir).exists()
        _ensure_prepared(cfg)
        splits = load_splits(cfg.data.splits_file, Path(cfg.data.dataset_dir) / "manifest.csv")
        assert len(splits.ids) == len(list((vesselnn_dir / "denoised").glob("*.tif")))
        assert splits.k == 3
        before = (Path(cfg.data.dataset_dir) / "dataset.json").stat().st_mtime_ns
        _ensure_prepared(cfg)  # second run: already prepared, nothing rewritten
        assert (Path(cfg.data.dataset_dir) / "dataset.json").stat().st_mtime_ns == before
    finally:
        monkeypatch.undo()
        get_settings(reload=True)
