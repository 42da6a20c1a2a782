"""Chunked prediction: the in-memory mask from one block at a time, within a memory budget."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

from minivess.adapters import ModelAdapter
from minivess.data.io import read_volume
from minivess.data.volume import Volume
from minivess.errors import ConfigError, DataError
from minivess.inference import PredictionSettings, Predictor
from minivess.inference import chunked as chunked_module
from minivess.inference.chunked import (
    in_memory_bytes,
    predict_file_chunked,
    streaming_percentiles,
)
from minivess.inference.lazy import open_lazy

from .conftest import PREDICTION_EXTRA


def synthetic_nifti(path: Path, shape: tuple[int, int, int], seed: int = 0) -> Path:
    """A seeded uint16 volume of bright tubes on noise, saved uncompressed with a 2 um grid."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.arange(s, dtype=np.float32) for s in shape), indexing="ij")
    tubes = (np.sin(x / 5 + np.sin(y / 9 + z / 4)) + np.sin(y / 7 + z / 3)) > 1.5
    array = (rng.normal(100, 20, shape) + 700 * tubes).clip(0).astype(np.uint16)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = (5.0, -7.0, 11.0)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def loaded(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def test_many_blocks_give_the_in_memory_mask_and_probability(
    tiny_adapter: ModelAdapter, tmp_path: Path
) -> None:
    source = synthetic_nifti(tmp_path / "vol.nii", (70, 61, 19))
    predictor = Predictor(tiny_adapter, PredictionSettings.from_extra(PREDICTION_EXTRA))
    reference = predictor.predict(read_volume(source))
    result = predict_file_chunked(
        predictor, source, tmp_path / "out", memory_budget_mb=1.2, probabilities=True
    )
    assert result.blocks >= 8
    mask_path, prob_path = result.written
    assert mask_path.name == "vol_mask.nii"
    np.testing.assert_array_equal(loaded(mask_path), reference.mask.array)
    np.testing.assert_allclose(loaded(prob_path), reference.probability.array, atol=1e-6)
    img = nib.load(str(mask_path))
    np.testing.assert_allclose(img.affine, nib.load(str(source)).affine)
    assert img.get_data_dtype() == np.uint8
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["vol_mask.nii", "vol_prob.nii"]


def test_a_real_vesselnn_tiff_read_page_by_page_gives_the_in_memory_mask(
    tiny_adapter: ModelAdapter, real_crop: Volume, tmp_path: Path
) -> None:
    source = tmp_path / "real.tif"
    tifffile.imwrite(source, np.transpose(real_crop.array, (2, 1, 0)))
    predictor = Predictor(tiny_adapter, PredictionSettings.from_extra(PREDICTION_EXTRA))
    reference = predictor.predict(read_volume(source))
    progress: list[tuple[int, int]] = []
    result = predict_file_chunked(
        predictor,
        source,
        tmp_path / "out",
        memory_budget_mb=0.8,
        progress=lambda done, total: progress.append((done, total)),
    )
    assert result.blocks > 1
    assert progress[-1] == (result.blocks, result.blocks)
    np.testing.assert_array_equal(loaded(result.written[0]), reference.mask.array)
    assert nib.load(str(result.written[0])).header.get_xyzt_units()[0] == "micron"


def test_a_volume_smaller_than_the_window_is_padded_as_in_memory(
    tiny_adapter: ModelAdapter, tmp_path: Path
) -> None:
    source = synthetic_nifti(tmp_path / "thin.nii", (40, 30, 5), seed=3)
    predictor = Predictor(tiny_adapter, PredictionSettings.from_extra(PREDICTION_EXTRA))
    reference = predictor.predict(read_volume(source))
    result = predict_file_chunked(predictor, source, tmp_path / "out", memory_budget_mb=1)
    np.testing.assert_array_equal(loaded(result.written[0]), reference.mask.array)


def test_streaming_percentiles_are_numpy_percentiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(1)
    array = np.concatenate(
        [np.zeros(20_000), rng.normal(-3.0, 50.0, 30_000), np.full(5_000, 7.25)]
    ).astype(np.float32)
    array = rng.permutation(array).reshape(50, 55, 20)
    path = tmp_path / "floats.nii"
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    monkeypatch.setattr(chunked_module, "_COLLECT_LIMIT", 100)  # force histogram refinement
    for percentiles in [(1.0, 99.8), (0.0, 100.0), (30.0, 80.0)]:
        got = streaming_percentiles(open_lazy(path), percentiles, budget_bytes=200_000)
        want = np.percentile(array.astype(np.float64), percentiles)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_non_finite_voxels_are_refused_and_nothing_is_written(
    tiny_adapter: ModelAdapter, tmp_path: Path
) -> None:
    array = np.ones((40, 40, 10), dtype=np.float32)
    array[3, 4, 5] = np.nan
    source = tmp_path / "nan.nii"
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(source))
    predictor = Predictor(tiny_adapter, PredictionSettings.from_extra(PREDICTION_EXTRA))
    with pytest.raises(DataError, match="non-finite"):
        predict_file_chunked(predictor, source, tmp_path / "out", memory_budget_mb=1)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_budget_below_one_window_says_the_least_that_works(
    tiny_adapter: ModelAdapter, tmp_path: Path
) -> None:
    source = synthetic_nifti(tmp_path / "vol.nii", (96, 96, 24))
    predictor = Predictor(tiny_adapter, PredictionSettings.from_extra(PREDICTION_EXTRA))
    with pytest.raises(ConfigError, match=r"use at least \d+ MB"):
        predict_file_chunked(predictor, source, tmp_path / "out", memory_budget_mb=0.01)
    assert not any((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from minivess.adapters import build_adapter
    from minivess.inference import PredictionSettings, Predictor
    from minivess.inference.chunked import predict_file_chunked
    torch.manual_seed(0)
    adapter = build_adapter("segresnet", json.loads(sys.argv[3]))
    predictor = Predictor(adapter, PredictionSettings.from_extra(json.loads(sys.argv[4])))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = predict_file_chunked(predictor, sys.argv[1], sys.argv[2],
                                  memory_budget_mb=float(sys.argv[5]))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kb": before, "peak_kb": peak, "blocks": result.blocks}))
    """
)


@pytest.mark.slow
def test_peak_memory_of_a_volume_larger_than_the_budget_stays_within_it(tmp_path: Path) -> None:
    from .conftest import TINY_SEGRESNET

    budget_mb, allowance_mb = 24, 24  # allowance: one batch of activations, allocator slack
    shape = (192, 192, 48)
    assert in_memory_bytes(shape) / 2**20 > budget_mb + allowance_mb
    source = synthetic_nifti(tmp_path / "big.nii", shape)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(source),
            str(tmp_path / "out"),
            json.dumps(TINY_SEGRESNET),
            json.dumps(PREDICTION_EXTRA),
            str(budget_mb),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    grown_mb = (figures["peak_kb"] - figures["before_kb"]) / 1024
    assert figures["blocks"] > 1
    assert grown_mb < budget_mb + allowance_mb, figures
    assert loaded(tmp_path / "out" / "big_mask.nii").shape == shape


def test_the_cli_predicts_block_by_block_only_above_the_budget(
    checkpoint: Path, tmp_path: Path
) -> None:
    import typer
    from typer.testing import CliRunner

    from minivess.cli.predict import predict

    app = typer.Typer()
    app.command("predict")(predict)
    app.command("noop", hidden=True)(lambda: None)
    source = synthetic_nifti(tmp_path / "vol.nii", (70, 61, 19))
    assert 2 * 2**20 < in_memory_bytes((70, 61, 19)) < 100 * 2**20
    for budget, name in (("2", "vol_mask.nii"), ("100", "vol_mask.nii.gz")):
        out = tmp_path / f"out{budget}"
        args = ["predict", str(source), "-m", str(checkpoint), "-o", str(out)]
        result = CliRunner().invoke(app, [*args, "--memory-budget-mb", budget])
        assert result.exit_code == 0, result.output
        assert result.output.strip() == str(out / name)
    np.testing.assert_array_equal(
        loaded(tmp_path / "out2" / "vol_mask.nii"), loaded(tmp_path / "out100" / "vol_mask.nii.gz")
    )


def test_a_model_with_a_conformal_head_writes_its_uncertainty_outputs_block_by_block(
    tiny_adapter: ModelAdapter, tmp_path: Path
) -> None:
    from minivess.uncertainty.calibration import PlattScaling
    from minivess.uncertainty.conformal import FNRControl, PredictionSets
    from minivess.uncertainty.head import UncertaintyHead

    head = UncertaintyHead(
        calibration=PlattScaling(scale=0.8, bias=-0.7),
        fnr_control=FNRControl(alpha=0.1, threshold=0.3, n_calibration=4),
        prediction_sets=PredictionSets(alpha=0.1, vessel_from=0.45, background_to=0.55),
    )
    source = synthetic_nifti(tmp_path / "vol.nii", (70, 61, 19))
    predictor = Predictor(
        tiny_adapter, PredictionSettings.from_extra(PREDICTION_EXTRA), uncertainty=head
    )
    reference = predictor.predict(read_volume(source))
    result = predict_file_chunked(
        predictor, source, tmp_path / "out", memory_budget_mb=1.6, probabilities=True
    )
    assert result.blocks >= 4
    assert [p.name for p in result.written] == [
        "vol_mask.nii",
        "vol_prob.nii",
        "vol_conformal.nii",
        "vol_sets.nii",
    ]
    mask, prob, conformal, sets = (loaded(p) for p in result.written)
    assert reference.conformal_mask is not None and reference.prediction_set is not None
    np.testing.assert_array_equal(mask, reference.mask.array)
    np.testing.assert_allclose(prob, reference.probability.array, atol=1e-6)
    # a voxel whose probability sits on a cut-off may fall either side of it
    on_cut = np.isclose(reference.probability.array, 0.3, atol=1e-5)
    np.testing.assert_array_equal(conformal[~on_cut], reference.conformal_mask.array[~on_cut])
    assert conformal.any() and not conformal.all()
    np.testing.assert_array_equal(sets, reference.prediction_set.array)
    assert {0, 1, 2} >= set(np.unique(sets).tolist())
