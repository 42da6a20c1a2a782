"""Chunked prediction: the in-memory mask from one block at a time, within a memory budget."""

from __future__ import annotations

import json
import re
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
    SAFETY_MB,
    in_memory_bytes,
    peak_rss_mb,
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


@pytest.mark.parametrize("blend", ["constant", "gaussian"])
def test_many_blocks_give_the_in_memory_mask_and_probability(
    tiny_adapter: ModelAdapter, tmp_path: Path, blend: str
) -> None:
    source = synthetic_nifti(tmp_path / "vol.nii", (70, 61, 19))
    extra = {**PREDICTION_EXTRA, "inference": {**PREDICTION_EXTRA["inference"], "blend": blend}}
    predictor = Predictor(tiny_adapter, PredictionSettings.from_extra(extra))
    reference = predictor.predict(read_volume(source))
    result = predict_file_chunked(
        predictor,
        source,
        tmp_path / "out",
        memory_budget_mb=1.3,
        probabilities=True,
        budget_covers="arrays",
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
        budget_covers="arrays",
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
    result = predict_file_chunked(
        predictor, source, tmp_path / "out", memory_budget_mb=1, budget_covers="arrays"
    )
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
        predict_file_chunked(
            predictor, source, tmp_path / "out", memory_budget_mb=1, budget_covers="arrays"
        )
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_budget_below_one_window_says_the_least_that_works(
    tiny_adapter: ModelAdapter, tmp_path: Path
) -> None:
    source = synthetic_nifti(tmp_path / "vol.nii", (96, 96, 24))
    predictor = Predictor(tiny_adapter, PredictionSettings.from_extra(PREDICTION_EXTRA))
    with pytest.raises(ConfigError, match=r"use at least \d+ MB"):
        predict_file_chunked(
            predictor, source, tmp_path / "out", memory_budget_mb=0.01, budget_covers="arrays"
        )
    assert not any((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_a_process_budget_below_what_the_process_already_uses_says_the_least_that_works(
    tiny_adapter: ModelAdapter, tmp_path: Path
) -> None:
    source = synthetic_nifti(tmp_path / "vol.nii", (96, 96, 24))
    predictor = Predictor(tiny_adapter, PredictionSettings.from_extra(PREDICTION_EXTRA))
    with pytest.raises(ConfigError) as caught:
        predict_file_chunked(predictor, source, tmp_path / "out", memory_budget_mb=50)
    message = str(caught.value)
    assert "\n" not in message
    found = re.search(r"already peaks at (\d+) MB .*use at least (\d+) MB", message)
    assert found, message
    peak, least = int(found[1]), int(found[2])
    assert abs(peak - peak_rss_mb()) <= 1
    assert least > peak + SAFETY_MB
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


_CHILD = textwrap.dedent(
    """
    import json, sys
    import torch
    from minivess.adapters import build_adapter
    from minivess.inference import PredictionSettings, Predictor
    from minivess.inference.chunked import baseline_rss_mb, peak_rss_mb, predict_file_chunked
    from minivess.inference.lazy import open_lazy
    torch.manual_seed(0)
    adapter = build_adapter("segresnet", json.loads(sys.argv[3]))
    predictor = Predictor(adapter, PredictionSettings.from_extra(json.loads(sys.argv[4])))
    def status(key):  # VmRSS / VmHWM in MB, None where /proc is missing
        try:
            lines = open("/proc/self/status").read().splitlines()
        except OSError:
            return None
        return next(int(l.split()[1]) / 1024 for l in lines if l.startswith(key + ":"))
    baseline = baseline_rss_mb(predictor, open_lazy(sys.argv[1]).shape)
    budget = baseline + float(sys.argv[5])
    try:  # Linux: reset VmHWM so that it measures the prediction alone
        open("/proc/self/clear_refs", "w").write("5")
        start = status("VmRSS")
    except OSError:
        start = None
    result = predict_file_chunked(predictor, sys.argv[1], sys.argv[2], memory_budget_mb=budget,
                                  probabilities=True)
    print(json.dumps({"baseline_mb": baseline, "budget_mb": budget, "peak_mb": peak_rss_mb(),
                      "arrays_mb": result.arrays_mb, "blocks": result.blocks,
                      "rss_before_mb": start, "hwm_during_mb": status("VmHWM")}))
    """
)


@pytest.mark.slow
def test_the_whole_process_peak_memory_stays_within_the_budget(tmp_path: Path) -> None:
    from .conftest import TINY_SEGRESNET

    above_baseline_mb = 24
    shape = (192, 192, 48)
    # in memory the volume alone would take more than the budget leaves above the process
    assert in_memory_bytes(shape) / 2**20 > 2 * above_baseline_mb
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
            str(above_baseline_mb),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(figures)
    assert figures["blocks"] > 1
    assert figures["peak_mb"] <= figures["budget_mb"], figures
    if figures["rss_before_mb"] is not None:  # the arrays stayed within what was left for them
        grown = figures["hwm_during_mb"] - figures["rss_before_mb"]
        assert 0 < grown <= figures["arrays_mb"] + SAFETY_MB, figures
    assert loaded(tmp_path / "out" / "big_mask.nii").shape == shape
    assert loaded(tmp_path / "out" / "big_prob.nii").shape == shape


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "minivess.cli.main", "predict", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_cli_predicts_block_by_block_only_above_the_process_budget(
    checkpoint: Path, tmp_path: Path
) -> None:
    source = synthetic_nifti(tmp_path / "vol.nii", (192, 192, 48))
    estimate_mb = in_memory_bytes((192, 192, 48)) / 2**20
    base = [str(source), "-m", str(checkpoint)]
    small = _cli(*base, "-o", str(tmp_path / "small"), "--memory-budget-mb", "1")
    assert small.returncode == 2, small.stderr
    assert small.stdout == ""
    errors = [line for line in small.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, small.stderr
    found = re.search(r"already peaks at (\d+) MB .*use at least (\d+) MB", errors[0])
    assert found, small.stderr
    peak, least = int(found[1]), int(found[2])
    # enough for block-wise prediction (with 20 MB for the process's RSS to vary from run to
    # run), less than the process plus the in-memory estimate
    budget = least + 20
    assert budget < peak + SAFETY_MB + estimate_mb, (peak, least, estimate_mb)
    runs = {}
    for name, mb in (("blocks", budget), ("memory", peak + 10 * estimate_mb + 200)):
        out = tmp_path / name
        runs[name] = _cli(*base, "-o", str(out), "--memory-budget-mb", str(mb))
        assert runs[name].returncode == 0, runs[name].stderr
    assert runs["blocks"].stdout.strip() == str(tmp_path / "blocks" / "vol_mask.nii")
    assert "block by block" in runs["blocks"].stderr
    assert runs["memory"].stdout.strip() == str(tmp_path / "memory" / "vol_mask.nii.gz")
    assert "in memory" in runs["memory"].stderr
    print(small.stderr, runs["blocks"].stderr, runs["memory"].stderr)
    np.testing.assert_array_equal(
        loaded(tmp_path / "blocks" / "vol_mask.nii"),
        loaded(tmp_path / "memory" / "vol_mask.nii.gz"),
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
        predictor,
        source,
        tmp_path / "out",
        memory_budget_mb=1.6,
        probabilities=True,
        budget_covers="arrays",
    )
    assert result.blocks >= 4
    assert [p.name for p in result.written] == [
        "vol_mask.nii",
        "vol_prob.nii",
        "vol_conformal.nii",
        "vol_sets.nii",
    ]
    mask, prob, conformal, sets = (loaded(p) for p in result.written)
    assert reference.conformal_mask is not None
    assert reference.prediction_set is not None
    np.testing.assert_array_equal(mask, reference.mask.array)
    np.testing.assert_allclose(prob, reference.probability.array, atol=1e-6)
    # a voxel whose probability sits on a cut-off may fall either side of it
    on_cut = np.isclose(reference.probability.array, 0.3, atol=1e-5)
    np.testing.assert_array_equal(conformal[~on_cut], reference.conformal_mask.array[~on_cut])
    assert conformal.any()
    assert not conformal.all()
    np.testing.assert_array_equal(sets, reference.prediction_set.array)
    assert {0, 1, 2} >= set(np.unique(sets).tolist())


def _rss_mb() -> float:
    lines = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) / 1024 for line in lines if line.startswith("VmRSS:"))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc")
def test_dropped_output_pages_leave_resident_memory_and_keep_their_values(tmp_path: Path) -> None:
    from minivess.inference.lazy import drop_pages, nifti_memmap

    shape = (512, 512, 256)  # 64 MB of uint8
    like = open_lazy(synthetic_nifti(tmp_path / "like.nii", (8, 8, 8)))
    grown = []
    with nifti_memmap(tmp_path / "out.nii", shape, np.uint8, like) as out:
        before = _rss_mb()
        for z in range(0, shape[2], 32):
            out[:, :, z : z + 32] = z // 32 + 1
            drop_pages(out)
            grown.append(_rss_mb() - before)
    assert max(grown) < 16, grown  # one 8 MB slab at most, not the 64 MB written
    written = loaded(tmp_path / "out.nii")
    assert written.shape == shape
    np.testing.assert_array_equal(written[0, 0, ::32], np.arange(1, 9))
