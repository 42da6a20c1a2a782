"""``minivess data``: the user path from a folder of files to a validated dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minivess.cli.main import EXIT_USER_ERROR, main
from minivess.data.manifest import read_manifest
from minivess.data.splits import load_splits


def test_synth_then_prepare_writes_dataset_manifest_and_splits(tmp_path: Path) -> None:
    raw, out = tmp_path / "synth", tmp_path / "prepared"
    with pytest.raises(SystemExit) as code:
        main(["data", "synth", str(raw), "--n", "3", "--shape", "32", "32", "8"])
    assert code.value.code == 0
    with pytest.raises(SystemExit) as code:
        main(["data", "prepare", str(raw), "--out", str(out), "--folds", "3"])
    assert code.value.code == 0

    manifest = read_manifest(out / "manifest.csv")
    assert sorted(manifest["id"]) == ["synth000", "synth001", "synth002"]
    splits = load_splits(out / "splits.json", manifest=manifest)
    assert splits.dataset_version == json.loads((out / "dataset.json").read_text())["version"]
    assert sorted(splits.ids) == sorted(manifest["id"])


def test_prepare_refuses_to_overwrite_without_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw, out = tmp_path / "synth", tmp_path / "prepared"
    with pytest.raises(SystemExit):
        main(["data", "synth", str(raw), "--n", "2", "--shape", "32", "32", "8"])
    with pytest.raises(SystemExit):
        main(["data", "prepare", str(raw), "--out", str(out), "--folds", "2"])
    before = (out / "manifest.csv").read_bytes()
    with pytest.raises(SystemExit) as code:
        main(["data", "prepare", str(raw), "--out", str(out), "--folds", "2"])
    assert code.value.code == EXIT_USER_ERROR
    assert "--overwrite" in capsys.readouterr().err or "overwrite" in capsys.readouterr().err
    assert (out / "manifest.csv").read_bytes() == before
