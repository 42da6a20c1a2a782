"""The REST service over real HTTP, started once for the module as a user starts it.

``minivess serve --model models:/vessels@champion --port N`` runs ``bentoml serve
minivess.serving.service:VesselSegmentation --host 127.0.0.1 --port N`` (in its own process
group, stopped afterwards). The champion is a tiny seeded checkpoint registered in a real SQLite
MLflow store, so one start covers the CLI, the registry alias and the service; loading a
checkpoint file directly is covered in-process by ``tests/v2/unit/serving/test_model.py``.
Small upload limits let the limits be hit cheaply. Every prediction is compared with the
in-process :class:`Predictor` on a crop of a real VesselNN volume.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml
import nibabel as nib
import numpy as np
import pytest
import requests
import tifffile
from tests.v2.conftest import PREDICTION_EXTRA, TINY_SEGRESNET
from tests.v2.integration.processes import Started, minivess_serve, wait_healthy

from minivess.data.io import read_tiff, read_volume, write_nifti
from minivess.data.volume import Volume
from minivess.inference import Prediction, Predictor

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START_TIMEOUT_S = 240
MAX_UPLOAD_MB = 1
MAX_VOXELS = 200_000
MODEL_NAME = "vessels"
CHAMPION = f"models:/{MODEL_NAME}@champion"


@dataclass(frozen=True)
class Inputs:
    """A real VesselNN crop as TIFF and as NIfTI (oblique affine), and its in-process result."""

    tiff: Path
    nifti: Path
    volume: Volume
    expected: Prediction


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, mlflow_template_store: Path) -> Path:
    """A seeded tiny checkpoint, and an MLflow SQLite store whose champion of ``vessels`` is it."""
    import shutil

    import torch
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from minivess.adapters import build_adapter
    from minivess.tracking import TrackedRun, log_model, register_and_promote, setup

    root = tmp_path_factory.mktemp("served-model")
    torch.manual_seed(0)
    adapter = build_adapter("segresnet", TINY_SEGRESNET)
    checkpoint = adapter.save_checkpoint(root / "best.pt", extra=PREDICTION_EXTRA)
    shutil.copyfile(mlflow_template_store, root / "mlflow.db")
    with pytest.MonkeyPatch.context() as patch:  # restore MLflow's process-wide state
        patch.setattr(tracking_utils, "_tracking_uri", None)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.setattr(setup, "_current", setup._Tracking())
        setup.configure_tracking(f"sqlite:///{root / 'mlflow.db'}")
        with TrackedRun("serving", log_system_metrics=False) as run:
            run.log_metrics({"val_dice": 0.5}, step=1)
            log_model(checkpoint)
        assert register_and_promote(run.run_id, MODEL_NAME, split_id="s1").promoted
    return root


@pytest.fixture(scope="module")
def inputs(vesselnn_dir: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    root = tmp_path_factory.mktemp("inputs")
    source = vesselnn_dir / "denoised" / "burgess2014_noisySparseVessels_BM4D_denoised.tif"
    stack = read_tiff(source).array[192:288, 256:336, :]  # 96 x 80 x 10 voxels
    tiff = root / "crop.tif"
    tifffile.imwrite(tiff, np.ascontiguousarray(stack.transpose(2, 1, 0)))  # (Z, Y, X) on disk
    affine = np.array(
        [[0.0, -0.8, 0.1, 12.5], [0.8, 0.0, 0.0, -40.0], [0.0, 0.05, 2.5, 300.0], [0, 0, 0, 1]]
    )
    nifti = write_nifti(root / "crop.nii.gz", stack, like=Volume(stack, affine))
    volume = read_volume(nifti)
    expected = Predictor.from_source(model_dir / "best.pt").predict(volume)
    return Inputs(tiff, nifti, volume, expected)


@pytest.fixture(scope="module")
def started(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    """``minivess serve`` of the registry champion, in a folder without a settings file."""
    folder = tmp_path_factory.mktemp("minivess-serve")
    with minivess_serve(
        ["--model", CHAMPION],
        folder,
        MINIVESS_TRACKING__URI=f"sqlite:///{model_dir / 'mlflow.db'}",
        MINIVESS_SERVE__MAX_UPLOAD_MB=str(MAX_UPLOAD_MB),
        MINIVESS_SERVE__MAX_VOXELS=str(MAX_VOXELS),
    ) as started:
        yield started


@pytest.fixture(scope="module")
def server(started: Started, inputs: Inputs) -> str:
    """The URL once the service is ready (``inputs`` are predicted in-process meanwhile)."""
    wait_healthy(f"{started.url}/readyz", started.process, started.log, START_TIMEOUT_S)
    return started.url


def _post(
    url: str, path: Path, *, name: str | None = None, field: str = "file"
) -> requests.Response:
    with path.open("rb") as fh:
        return requests.post(url, files={field: (name or path.name, fh)}, timeout=120)


def _nifti(content: bytes) -> Any:
    return nib.Nifti1Image.from_bytes(gzip.decompress(content))


def test_mask_over_multipart_matches_the_in_process_predictor(server: str, inputs: Inputs) -> None:
    response = _post(f"{server}/segment", inputs.nifti)
    assert response.status_code == 200, response.text
    mask = _nifti(response.content)
    original = nib.load(str(inputs.nifti))
    assert mask.shape == original.shape
    np.testing.assert_allclose(mask.affine, original.affine, atol=1e-6)
    assert mask.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(mask.dataobj), inputs.expected.mask.array)


def test_probabilities_match_the_in_process_predictor(server: str, inputs: Inputs) -> None:
    response = _post(f"{server}/probabilities", inputs.nifti)
    assert response.status_code == 200, response.text
    probability = np.asarray(_nifti(response.content).dataobj)
    assert probability.dtype == np.float32
    np.testing.assert_allclose(probability, inputs.expected.probability.array, atol=1e-6)


def test_python_client_segments_and_summarises_a_tiff(server: str, inputs: Inputs) -> None:
    expected = inputs.expected.mask.array
    with bentoml.SyncHTTPClient(server) as client:
        mask = read_volume(client.segment(file=inputs.tiff))
        summary = client.summary(file=inputs.tiff)
    assert mask.shape == inputs.volume.shape
    np.testing.assert_allclose(mask.affine, np.eye(4))  # a plain TIFF: 1 um voxels
    np.testing.assert_array_equal(mask.array, expected)
    vessel = int(np.count_nonzero(expected))
    assert summary["shape"] == list(inputs.volume.shape)
    assert summary["spacing_um"] == [1.0, 1.0, 1.0]
    assert summary["spacing_source"] == "default"
    assert summary["vessel_voxels"] == vessel
    assert summary["vessel_fraction"] == pytest.approx(vessel / expected.size)
    assert summary["vessel_volume_um3"] == pytest.approx(vessel)
    assert summary["model"]["adapter"] == "segresnet"
    assert 0 < summary["inference_seconds"] <= summary["total_seconds"]


def test_summary_names_the_registry_version_and_uses_the_affine(
    server: str, inputs: Inputs
) -> None:
    response = _post(f"{server}/summary", inputs.nifti)
    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["model"]["name"] == MODEL_NAME
    assert summary["model"]["version"] == "1"
    assert summary["model"]["source"] == CHAMPION
    vessel = int(np.count_nonzero(inputs.expected.mask.array))
    assert summary["vessel_voxels"] == vessel
    voxel_um3 = abs(np.linalg.det(inputs.volume.affine[:3, :3]))
    assert summary["vessel_volume_um3"] == pytest.approx(vessel * voxel_um3)
    assert summary["spacing_um"] == pytest.approx(list(inputs.volume.spacing))


def _bad_inputs(root: Path, inputs: Inputs) -> dict[str, tuple[Path, str, str]]:
    """name -> (file, upload name, endpoint) of uploads that must be refused."""
    truncated = root / "truncated.nii.gz"
    truncated.write_bytes(inputs.nifti.read_bytes()[:300])
    text = root / "text.nii.gz"
    text.write_text("this is not a volume")
    flat = root / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32), np.float32), np.eye(4)), str(flat))
    nan = root / "nan.nii.gz"
    voxels = np.ones((16, 16, 8), np.float32)
    voxels[3, 4, 5] = np.nan
    nib.save(nib.Nifti1Image(voxels, np.eye(4)), str(nan))
    header = nib.Nifti1Header()
    header.set_data_shape((1000, 1000, 1000))
    bomb = root / "bomb.nii.gz"
    bomb.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4))
    big = root / "big.nii"
    big.write_bytes(np.random.default_rng(0).bytes(MAX_UPLOAD_MB * 2**20 + 1024))
    return {
        "corrupt-file": (truncated, "volume.nii.gz", "segment"),
        "file-type": (text, "volume.nii.gz", "segment"),
        "dimensionality": (flat, "flat.nii.gz", "summary"),
        "non-finite": (nan, "nan.nii.gz", "probabilities"),
        "too-many-voxels": (bomb, "bomb.nii.gz", "summary"),
        "upload-size": (big, "big.nii", "segment"),
        "file-name": (inputs.nifti, _escaping_name(root / "evil.nii.gz"), "segment"),
    }


def _escaping_name(target: Path) -> str:
    """A relative upload name that, used as a path from any folder, would land on ``target``."""
    return "../" * 32 + str(target.relative_to(target.anchor))


STATUS = {"file-type": 415, "too-many-voxels": 413, "upload-size": 413}


def test_bad_inputs_are_4xx_with_a_message_and_the_service_keeps_serving(
    server: str, inputs: Inputs, tmp_path: Path
) -> None:
    url = server
    for rule, (path, name, endpoint) in _bad_inputs(tmp_path, inputs).items():
        response = _post(f"{url}/{endpoint}", path, name=name)
        assert response.status_code == STATUS.get(rule, 400), (rule, response.text)
        assert response.json()["error"].startswith(f"[{rule}]"), response.text
    missing = _post(f"{url}/segment", inputs.nifti, field="volume")
    assert missing.status_code == 400
    assert "named 'file'" in missing.json()["error"]
    as_json = requests.post(f"{url}/summary", json={"file": str(inputs.nifti)}, timeout=30)
    assert as_json.status_code == 415
    assert not (tmp_path / "evil.nii.gz").exists()

    assert requests.get(f"{url}/readyz", timeout=10).status_code == 200
    again = _post(f"{url}/summary", inputs.tiff)
    assert again.status_code == 200
    assert again.json()["vessel_voxels"] == int(np.count_nonzero(inputs.expected.mask.array))


def test_metrics_include_the_model_metrics(server: str, inputs: Inputs) -> None:
    assert _post(f"{server}/summary", inputs.tiff).status_code == 200
    text = requests.get(f"{server}/metrics", timeout=10).text
    for sample in (
        'minivess_prediction_seconds_bucket{endpoint="summary",le="0.5"}',
        'minivess_prediction_seconds_count{endpoint="summary"}',
        'minivess_input_voxels_bucket{endpoint="summary",le="1e+06"}',
        'minivess_vessel_fraction_count{endpoint="summary"}',
    ):
        assert sample in text, sample
    voxels = next(
        line for line in text.splitlines() if line.startswith("minivess_input_voxels_sum{")
    )
    assert float(voxels.split()[-1]) >= inputs.volume.array.size


def test_a_model_without_conformal_calibration_refuses_those_maps_before_reading(
    server: str, inputs: Inputs, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8bnot a volume")  # a 409, not a 400: the upload is never read
    for endpoint, rule in (
        ("conformal", "no-conformal"),
        ("prediction_sets", "no-prediction-sets"),
    ):
        for upload in (inputs.nifti, corrupt):
            response = _post(f"{server}/{endpoint}", upload)
            assert response.status_code == 409, response.text
            error = response.json()["error"]
            assert error.startswith(f"[{rule}]"), error
            assert f"minivess conformal -m {CHAMPION}" in error

    entropy = _post(f"{server}/entropy", inputs.nifti)  # needs no calibration
    assert entropy.status_code == 200, entropy.text
    p = np.clip(inputs.expected.probability.array.astype(np.float64), 1e-12, 1 - 1e-12)
    bits = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    np.testing.assert_allclose(np.asarray(_nifti(entropy.content).dataobj), bits, atol=1e-5)
    summary = _post(f"{server}/summary", inputs.nifti).json()
    assert (summary["calibrated"], summary["conformal"], summary["uncertain_fraction"]) == (
        False,
        None,
        None,
    )
    drift = requests.get(f"{server}/drift", timeout=10)
    assert drift.status_code == 200
    assert drift.json()["status"] == "off"
    assert "serve.drift_reference" in drift.json()["message"]
    metrics = requests.get(f"{server}/metrics", timeout=10).text.splitlines()
    assert "minivess_drift_detected NaN" in metrics  # unknown, never a false "no drift"
