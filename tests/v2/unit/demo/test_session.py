"""Demo session: choosing the input, caching predictors, segmenting and saving the mask."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from minivess.data.io import read_volume, write_nifti
from minivess.data.volume import Volume, affine_from_spacing
from minivess.demo import PredictorCache, Segmenter, choose_input, example_volumes
from minivess.errors import ConfigError, DataError
from minivess.inference import Predictor


@pytest.fixture
def volume_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    image = Volume(rng.random((32, 32, 8), dtype=np.float32), affine_from_spacing((2.0, 2.0, 5.0)))
    return write_nifti(tmp_path / "stack.nii.gz", image.array, like=image)


def test_examples_are_the_volume_files_of_a_folder(tmp_path: Path) -> None:
    for name in ("b.tif", "a.nii.gz", "notes.txt", "c.ome.tif"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.nii").mkdir()
    assert list(example_volumes(tmp_path)) == ["a.nii.gz", "b.tif", "c.ome.tif"]
    assert example_volumes(tmp_path / "missing") == {}
    assert example_volumes(None) == {}


def test_upload_wins_over_an_example_and_unknown_examples_are_refused(tmp_path: Path) -> None:
    examples = {"a.tif": tmp_path / "a.tif"}
    assert choose_input(str(tmp_path / "up.nii"), "a.tif", examples) == tmp_path / "up.nii"
    assert choose_input(None, "a.tif", examples) == tmp_path / "a.tif"
    with pytest.raises(DataError, match="unknown-example"):
        choose_input(None, "../../etc/passwd", examples)
    with pytest.raises(DataError, match="no-input"):
        choose_input(None, None, examples)


def test_cache_loads_each_model_once_and_drops_the_oldest(checkpoint: Path, tmp_path: Path) -> None:
    cache = PredictorCache("cpu", size=1)
    first = cache.get(str(checkpoint))
    assert cache.get(f" {checkpoint} ") is first
    other = checkpoint.with_name("other.pt")
    other.write_bytes(checkpoint.read_bytes())
    assert cache.get(str(other)) is not first
    assert cache.get(str(checkpoint)) is not first  # evicted, loaded again


def test_cache_refuses_empty_sources_and_unknown_backends(checkpoint: Path) -> None:
    cache = PredictorCache()
    with pytest.raises(ConfigError, match="no model given"):
        cache.get("  ")
    with pytest.raises(ConfigError, match="backend must be one of torch, onnx; got 'tensorrt'"):
        cache.get(str(checkpoint), "tensorrt")


def test_segment_writes_the_predictor_mask_on_the_input_grid(
    checkpoint: Path, volume_file: Path, tmp_path: Path
) -> None:
    segmenter = Segmenter(PredictorCache(), output_dir=tmp_path / "out")
    result = segmenter.segment(volume_file, str(checkpoint))

    expected = Predictor.from_source(checkpoint).predict(read_volume(volume_file))
    saved = nib.load(result.mask_file)
    np.testing.assert_array_equal(np.asarray(saved.dataobj), expected.mask.array)
    np.testing.assert_allclose(saved.affine, nib.load(volume_file).affine)
    assert result.mask_file.name == "stack_mask.nii.gz"
    summary = result.summary()
    assert summary["vessel_voxels"] == int(expected.mask.array.sum())
    assert summary["shape"] == "32 x 32 x 8"
    assert summary["spacing_um"] == "2 x 2 x 5"
    assert summary["vessel_volume_um3"] == pytest.approx(summary["vessel_voxels"] * 20.0)
    assert summary["model"] == str(checkpoint)


def test_a_bad_volume_fails_before_the_model_is_loaded(tmp_path: Path) -> None:
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b truncated gzip")
    segmenter = Segmenter(PredictorCache(), output_dir=tmp_path / "out")
    with pytest.raises(DataError, match=r"broken\.nii\.gz: \[corrupt-file\]"):
        segmenter.segment(bad, str(tmp_path / "no-such-model.pt"))


def test_a_volume_above_the_voxel_limit_is_refused_from_its_header(
    volume_file: Path, tmp_path: Path
) -> None:
    segmenter = Segmenter(PredictorCache(), output_dir=tmp_path / "out", max_voxels=1000)
    with pytest.raises(DataError, match=r"\[too-many-voxels\] volume \(32, 32, 8\)"):
        segmenter.segment(volume_file, str(tmp_path / "no-such-model.pt"))


def test_overlays_are_the_mask_or_maps_of_the_probability(
    checkpoint: Path, volume_file: Path, tmp_path: Path
) -> None:
    result = Segmenter(PredictorCache(), output_dir=tmp_path).segment(volume_file, str(checkpoint))
    np.testing.assert_array_equal(result.overlay("mask"), result.prediction.mask.array)
    probability = result.overlay("P(vessel)")
    np.testing.assert_array_equal(probability, result.prediction.probability.array)
    entropy = result.overlay("entropy")
    assert result.overlay("entropy") is entropy  # computed once per prediction
    assert entropy.shape == probability.shape
    assert float(entropy.min()) >= 0.0
    assert float(entropy.max()) <= 1.0
    with pytest.raises(DataError, match="unknown-overlay"):
        result.overlay("variance")


def test_uncertain_overlay_needs_a_conformally_calibrated_model(
    checkpoint: Path, volume_file: Path, tmp_path: Path
) -> None:
    from minivess.uncertainty.conformal import UNCERTAIN, FNRControl, PredictionSets
    from minivess.uncertainty.head import UncertaintyHead, save_with_uncertainty

    plain = Segmenter(PredictorCache(), output_dir=tmp_path).segment(volume_file, str(checkpoint))
    with pytest.raises(DataError, match="no-conformal"):
        plain.overlay("uncertain (conformal)")
    assert "uncertain_voxels" not in plain.summary()

    head = UncertaintyHead(
        fnr_control=FNRControl(alpha=0.1, threshold=0.3, n_calibration=4, calibration_ids=("a",)),
        prediction_sets=PredictionSets(alpha=0.1, vessel_from=0.45, background_to=0.55),
    )
    calibrated = save_with_uncertainty(checkpoint, tmp_path / "conformal.pt", head)
    result = Segmenter(PredictorCache(), output_dir=tmp_path / "c").segment(
        volume_file, str(calibrated)
    )
    sets = result.prediction.prediction_set
    assert sets is not None
    uncertain = result.overlay("uncertain (conformal)")
    np.testing.assert_array_equal(uncertain, (sets.array == UNCERTAIN).astype(np.float32))
    summary = result.summary()
    assert summary["uncertain_voxels"] == int(np.count_nonzero(sets.array == UNCERTAIN))
    assert result.prediction.conformal_mask is not None
    assert summary["conformal_vessel_voxels"] == int(
        np.count_nonzero(result.prediction.conformal_mask.array)
    )


def test_disagreement_overlay_needs_an_ensemble(
    checkpoint: Path, volume_file: Path, tmp_path: Path
) -> None:
    import torch

    from minivess.adapters import build_adapter, load_checkpoint
    from minivess.ensemble import build_ensemble, save_ensemble

    plain = Segmenter(PredictorCache(), output_dir=tmp_path).segment(volume_file, str(checkpoint))
    with pytest.raises(DataError, match="no-ensemble"):
        plain.overlay("ensemble disagreement (MI)")

    _, info = load_checkpoint(checkpoint)
    torch.manual_seed(1)
    other = build_adapter(info.adapter, info.config).save_checkpoint(
        tmp_path / "seed1.pt", extra=info.extra
    )
    ensemble, extra = build_ensemble([checkpoint, other], combine="mean")
    source = save_ensemble(ensemble, extra, tmp_path / "ensemble.pt")
    result = Segmenter(PredictorCache(), output_dir=tmp_path / "e").segment(
        volume_file, str(source)
    )
    mi = result.prediction.mutual_information
    assert mi is not None
    shown = result.overlay("ensemble disagreement (MI)")
    assert shown.shape == result.prediction.mask.array.shape
    np.testing.assert_allclose(shown, mi.array / np.log(2), atol=1e-6)  # bits: 1 = opposite votes
    assert 0.0 < float(shown.max()) <= 1.0  # two random members disagree somewhere
