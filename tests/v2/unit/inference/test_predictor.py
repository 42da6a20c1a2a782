"""Predictor: outputs on exactly the input's grid, identical to the adapter's own prediction."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
import pytest
import torch

from minivess.adapters import CheckpointError, ModelAdapter
from minivess.data.io import read_volume
from minivess.data.transforms import normalise_intensity
from minivess.data.volume import Volume, affine_from_spacing
from minivess.errors import ConfigError, DataError
from minivess.inference import PredictionSettings, Predictor

from .conftest import PREDICTION_EXTRA


def oblique_affine(spacing: tuple[float, float, float]) -> np.ndarray:
    """A rotated (about z, then x) affine with an offset, in micrometres."""
    a, b = np.deg2rad(20.0), np.deg2rad(-7.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag(spacing)
    affine[:3, 3] = (-31.5, 12.25, 400.0)
    return affine


def write_oblique_nifti(path: Path, volume: Volume) -> Path:
    """The volume as a micrometre NIfTI with an oblique affine, qform code 1 and sform code 2."""
    affine = oblique_affine(volume.spacing)
    img = nib.Nifti1Image(volume.array, affine)
    img.header.set_xyzt_units(xyz="micron")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def load(path: Path) -> Any:
    return cast(Any, nib.load(str(path)))


def direct_probabilities(adapter: ModelAdapter, volume: Volume) -> torch.Tensor:
    """What the adapter predicts when driven by hand with the training normalisation."""
    window = PREDICTION_EXTRA["inference"]
    image = normalise_intensity(volume.array[None], (1.0, 99.8))
    return adapter.predict_volume(
        image,
        roi_size=window["roi_size"],
        overlap=window["overlap"],
        sw_batch_size=window["sw_batch_size"],
        precision=window["precision"],
    )


def test_prediction_equals_the_adapter_driven_by_hand(checkpoint: Path, real_crop: Volume) -> None:
    predictor = Predictor.from_source(checkpoint)
    prediction = predictor.predict(real_crop)
    expected = direct_probabilities(predictor.adapter, real_crop)
    np.testing.assert_array_equal(prediction.mask.array, expected.argmax(0).numpy())
    np.testing.assert_array_equal(prediction.probability.array, expected[1].numpy())
    assert prediction.mask.array.dtype == np.uint8
    assert prediction.probability.array.dtype == np.float32
    assert prediction.mask.shape == prediction.probability.shape == real_crop.shape
    np.testing.assert_array_equal(prediction.mask.affine, real_crop.affine)
    assert prediction.model.adapter == "segresnet"
    assert prediction.model.source == str(checkpoint)
    assert prediction.seconds > 0


def test_tiff_output_has_the_input_shape_and_spacing(checkpoint: Path, real_tiff: Path) -> None:
    out = real_tiff.parent.parent / "out"
    written = Predictor.from_source(checkpoint).predict_file(real_tiff, out, probabilities=True)
    assert [p.name for p in written] == ["crop_mask.nii.gz", "crop_prob.nii.gz"]
    source = read_volume(real_tiff)
    for path in written:
        img = load(path)
        assert img.shape == source.shape
        np.testing.assert_allclose(img.affine, affine_from_spacing(source.spacing), atol=1e-6)
        assert img.header.get_xyzt_units()[0] == "micron"
        assert int(img.header["qform_code"]) > 0
        assert int(img.header["sform_code"]) > 0
    mask = np.asarray(load(written[0]).dataobj)
    prob = np.asarray(load(written[1]).dataobj)
    assert mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1}
    assert prob.dtype == np.float32
    assert prob.min() >= 0.0
    assert prob.max() <= 1.0


def test_oblique_nifti_keeps_affine_qform_and_sform(
    checkpoint: Path, real_crop: Volume, tmp_path: Path
) -> None:
    source = write_oblique_nifti(tmp_path / "in" / "oblique.nii.gz", real_crop)
    predictor = Predictor.from_source(checkpoint)
    written = predictor.predict_file(source, tmp_path / "out", probabilities=True)
    original = load(source)
    for path in written:
        img = load(path)
        assert img.shape == original.shape
        np.testing.assert_allclose(img.affine, original.affine, atol=1e-5)
        np.testing.assert_allclose(img.get_qform(), original.get_qform(), atol=1e-5)
        np.testing.assert_allclose(img.get_sform(), original.get_sform(), atol=1e-5)
        assert int(img.header["qform_code"]) == 1
        assert int(img.header["sform_code"]) == 2
    expected = direct_probabilities(predictor.adapter, read_volume(source)).argmax(0).numpy()
    np.testing.assert_array_equal(np.asarray(load(written[0]).dataobj), expected)


def test_non_finite_input_is_refused_naming_the_file(checkpoint: Path, tmp_path: Path) -> None:
    array = np.random.default_rng(0).random((16, 16, 8)).astype(np.float32)
    array[3, 4, 5] = np.nan
    source = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(source))
    out = tmp_path / "out"
    with pytest.raises(DataError) as info:
        Predictor.from_source(checkpoint).predict_file(source, out)
    assert info.value.rule == "non-finite"
    assert info.value.path == source
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    ("array", "rule"),
    [
        (np.zeros((4, 4, 4, 2), np.float32), "dimensionality"),
        (np.zeros((4, 4, 4), bool), "dtype"),
        (np.full((4, 4, 4), np.inf, np.float32), "non-finite"),
    ],
)
def test_volumes_the_network_cannot_segment_are_refused(
    checkpoint: Path, array: np.ndarray, rule: str
) -> None:
    volume = Volume(array, np.eye(4), source=Path("bad.nii.gz"))
    with pytest.raises(DataError) as info:
        Predictor.from_source(checkpoint).predict(volume)
    assert info.value.rule == rule
    assert info.value.path == Path("bad.nii.gz")


def test_checkpoint_without_prediction_settings_is_refused(
    tiny_adapter: ModelAdapter, tmp_path: Path
) -> None:
    bare = tiny_adapter.save_checkpoint(tmp_path / "bare.pt", extra={"epoch": 3})
    with pytest.raises(CheckpointError) as info:
        Predictor.from_source(bare)
    assert info.value.rule == "prediction-settings"
    assert "preprocessing" in str(info.value)
    assert "inference" in str(info.value)


def test_precision_override_and_invalid_device(checkpoint: Path) -> None:
    assert Predictor.from_source(checkpoint).settings.inference.precision == "fp32"
    assert Predictor.from_source(checkpoint, precision="bf16").settings.inference.precision == (
        "bf16"
    )
    with pytest.raises(ConfigError, match="precision"):
        Predictor.from_source(checkpoint, precision="fp64")
    with pytest.raises(ConfigError, match="device"):
        Predictor.from_source(checkpoint, device="tpu-please")


def test_constructor_takes_an_adapter_in_memory(
    tiny_adapter: ModelAdapter, real_crop: Volume
) -> None:
    settings = PredictionSettings.from_extra(PREDICTION_EXTRA)
    prediction = Predictor(tiny_adapter, settings).predict(real_crop)
    expected = direct_probabilities(tiny_adapter, real_crop).argmax(0).numpy()
    np.testing.assert_array_equal(prediction.mask.array, expected)


@pytest.mark.slow
def test_full_real_tiff_keeps_its_512x512_grid(
    tiny_adapter: ModelAdapter, vesselnn_dir: Path, tmp_path: Path
) -> None:
    extra = {
        **PREDICTION_EXTRA,
        "inference": {**PREDICTION_EXTRA["inference"], "roi_size": [128, 128, 12]},
    }
    ckpt = tiny_adapter.save_checkpoint(tmp_path / "big.pt", extra=extra)
    source = vesselnn_dir / "denoised" / "burgess2014_noisySparseVessels_BM4D_denoised.tif"
    (mask,) = Predictor.from_source(ckpt).predict_file(source, tmp_path / "out")
    img = load(mask)
    assert mask.name == "burgess2014_noisySparseVessels_BM4D_denoised_mask.nii.gz"
    assert img.shape == (512, 512, 10)
    np.testing.assert_allclose(img.affine, read_volume(source).affine)
    assert set(np.unique(np.asarray(img.dataobj))) <= {0, 1}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_prediction_matches_the_cpu_on_the_same_grid(
    checkpoint: Path, real_crop: Volume
) -> None:
    on_cpu = Predictor.from_source(checkpoint).predict(real_crop)
    on_gpu = Predictor.from_source(checkpoint, device="cuda").predict(real_crop)
    assert on_gpu.mask.shape == real_crop.shape
    np.testing.assert_array_equal(on_gpu.mask.affine, real_crop.affine)
    # cuDNN may run fp32 convolutions in TF32: close, not bit-identical.
    assert (on_gpu.mask.array == on_cpu.mask.array).mean() > 0.99
    np.testing.assert_allclose(on_gpu.probability.array, on_cpu.probability.array, atol=2e-2)
