"""Uncertainty outputs, the drift metric and task progress of the REST service, over real HTTP.

One ``minivess serve --model uq.pt --drift-reference features_reference.csv`` runs for the
module. ``uq.pt`` is a tiny seeded SegResNet whose temperature, conformal threshold and
prediction sets are fitted with :mod:`minivess.uncertainty` on labelled crops of the real
VesselNN volumes; the reference is the feature table ``minivess drift`` computes of those
volumes. Every map is compared with the in-process :class:`Predictor`; drift is checked with
real crops (no drift) and the same crops with detector gain, offset and noise changed (drift).
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import requests
from tests.v2.conftest import PREDICTION_EXTRA, TINY_SEGRESNET
from tests.v2.integration.processes import Started, minivess_serve, wait_healthy

from minivess.data.io import read_tiff, read_volume, write_nifti
from minivess.data.volume import Volume
from minivess.inference import Prediction, Predictor
from minivess.uncertainty import UncertaintyHead

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START_TIMEOUT_S = 240
DRIFT_TIMEOUT_S = 300
TASK_TIMEOUT_S = 180
TILE = 32
CROP = (slice(16, 144), slice(16, 144))  # 128 x 128 x D: 16 feature rows of 32 x 32 x D
WINDOW = 6 * 16  # one crop of each of the six volumes
ALPHA = 0.2


@dataclass(frozen=True)
class Model:
    checkpoint: Path
    head: UncertaintyHead


@dataclass(frozen=True)
class Inputs:
    """Real crops (one per volume) and their shifted copies as NIfTI, and one expected result."""

    real: list[Path]
    shifted: list[Path]
    expected: Prediction


def _denoised(vesselnn_dir: Path) -> list[Path]:
    paths = sorted((vesselnn_dir / "denoised").glob("*_BM4D_denoised.tif"))
    assert len(paths) == 6, f"expected the six shared volumes in {vesselnn_dir}"
    return paths


@pytest.fixture(scope="module")
def model(vesselnn_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Model:
    """A tiny seeded SegResNet with a temperature, FNR control and prediction sets stored."""
    import torch

    from minivess.adapters import build_adapter
    from minivess.uncertainty import fit_fnr_control, fit_prediction_sets, fit_temperature
    from minivess.uncertainty.head import save_with_uncertainty

    root = tmp_path_factory.mktemp("uq-model")
    torch.manual_seed(0)
    plain = build_adapter("segresnet", TINY_SEGRESNET).save_checkpoint(
        root / "best.pt", extra=PREDICTION_EXTRA
    )
    predictor = Predictor.from_source(plain)
    probs, labels = [], []
    window = (slice(192, 256), slice(192, 256))  # a 64 x 64 x D crop holding vessels
    for path in _denoised(vesselnn_dir):
        name = path.name.removesuffix("_BM4D_denoised.tif")
        label = read_tiff(next((vesselnn_dir / "labels").glob(f"{name}_*"))).array[window] != 0
        image = read_tiff(path)
        crop = Volume(np.ascontiguousarray(image.array[window]), image.affine)
        probs.append(predictor.probabilities(crop)[1].numpy())
        labels.append(label)
    temperature = fit_temperature(probs, labels)
    calibrated = [temperature.apply(p) for p in probs]
    head = UncertaintyHead(
        calibration=temperature,
        fnr_control=fit_fnr_control(calibrated, labels, ALPHA),
        prediction_sets=fit_prediction_sets(calibrated, labels, ALPHA),
    )
    return Model(save_with_uncertainty(plain, root / "uq.pt", head), head)


@pytest.fixture(scope="module")
def reference(vesselnn_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The feature table ``minivess drift`` computes of the real volumes, as CSV."""
    from minivess.cli.drift import features_of

    table = features_of(vesselnn_dir / "denoised", None, TILE)
    path = tmp_path_factory.mktemp("drift-reference") / "features_reference.csv"
    table.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def started(
    model: Model, reference: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Started]:
    folder = tmp_path_factory.mktemp("minivess-serve-uq")
    args = ["--model", str(model.checkpoint), "--drift-reference", str(reference)]
    with minivess_serve(
        args,
        folder,
        MINIVESS_SERVE__DRIFT_WINDOW=str(WINDOW),
        MINIVESS_SERVE__DRIFT_TILE=str(TILE),
    ) as started:
        yield started


@pytest.fixture(scope="module")
def inputs(
    model: Model, vesselnn_dir: Path, started: Started, tmp_path_factory: pytest.TempPathFactory
) -> Inputs:
    """Written and predicted in-process while the server starts."""
    root = tmp_path_factory.mktemp("uq-inputs")
    rng = np.random.default_rng(0)
    real, shifted = [], []
    for k, path in enumerate(_denoised(vesselnn_dir)):
        image = read_tiff(path)
        crop = np.ascontiguousarray(image.array[CROP])
        real.append(write_nifti(root / f"real{k}.nii.gz", crop, like=Volume(crop, image.affine)))
        # another detector: lower gain, an offset and more noise
        other = (crop * 0.6 + 30.0 + rng.normal(0.0, 8.0, crop.shape)).astype(np.float32)
        shifted.append(
            write_nifti(root / f"shifted{k}.nii.gz", other, like=Volume(other, image.affine))
        )
    expected = Predictor.from_source(model.checkpoint).predict(read_volume(real[0]))
    return Inputs(real, shifted, expected)


@pytest.fixture(scope="module")
def server(started: Started, inputs: Inputs) -> str:
    wait_healthy(f"{started.url}/readyz", started.process, started.log, START_TIMEOUT_S)
    return started.url


def _post(url: str, path: Path) -> requests.Response:
    with path.open("rb") as fh:
        return requests.post(url, files={"file": (path.name, fh)}, timeout=300)


def _nifti(content: bytes) -> Any:
    return nib.Nifti1Image.from_bytes(gzip.decompress(content))


def _entropy_bits(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-12, 1 - 1e-12)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def test_uncertainty_maps_match_the_in_process_predictor(server: str, inputs: Inputs) -> None:
    expected = inputs.expected
    assert expected.calibrated
    assert expected.conformal_mask is not None
    assert expected.prediction_set is not None
    for endpoint, want, dtype in (
        ("conformal", expected.conformal_mask.array, np.uint8),
        ("prediction_sets", expected.prediction_set.array, np.uint8),
    ):
        response = _post(f"{server}/{endpoint}", inputs.real[0])
        assert response.status_code == 200, response.text
        image = _nifti(response.content)
        assert image.get_data_dtype() == dtype
        np.testing.assert_allclose(image.affine, expected.mask.affine, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(image.dataobj), want)
    assert set(np.unique(expected.prediction_set.array)) <= {0, 1, 2}

    response = _post(f"{server}/entropy", inputs.real[0])
    assert response.status_code == 200, response.text
    entropy = np.asarray(_nifti(response.content).dataobj)
    assert entropy.dtype == np.float32
    np.testing.assert_allclose(entropy, _entropy_bits(expected.probability.array), atol=1e-5)
    assert entropy.min() >= 0.0
    assert entropy.max() <= 1.0


def test_summary_reports_calibration_and_the_conformal_mask(
    server: str, inputs: Inputs, model: Model
) -> None:
    response = _post(f"{server}/summary", inputs.real[0])
    assert response.status_code == 200, response.text
    summary = response.json()
    expected = inputs.expected
    assert expected.conformal_mask is not None
    assert expected.prediction_set is not None
    assert model.head.fnr_control is not None
    conformal = int(np.count_nonzero(expected.conformal_mask.array))
    assert summary["calibrated"] is True
    assert summary["conformal"] == {
        "alpha": ALPHA,
        "threshold": model.head.fnr_control.threshold,
        "vessel_voxels": conformal,
        "vessel_fraction": pytest.approx(conformal / expected.mask.array.size),
    }
    uncertain = float(np.mean(expected.prediction_set.array == 2))
    assert summary["uncertain_fraction"] == pytest.approx(uncertain)
    assert summary["vessel_voxels"] == int(np.count_nonzero(expected.mask.array))


def test_a_task_reports_its_windows_and_returns_the_segment_mask(
    server: str, inputs: Inputs
) -> None:
    upload = inputs.real[1]
    with upload.open("rb") as fh:
        submitted = requests.post(
            f"{server}/segment_async/submit", files={"file": (upload.name, fh)}, timeout=60
        )
    assert submitted.status_code == 200, submitted.text
    task_id = submitted.json()["task_id"]
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + TASK_TIMEOUT_S
    while time.monotonic() < deadline:
        progress = requests.get(
            f"{server}/segment_async/progress", params={"task_id": task_id}, timeout=10
        )
        assert progress.status_code == 200, progress.text  # known from the submit on
        seen.append(progress.json())
        if seen[-1]["stage"] in ("done", "failed"):
            break
        time.sleep(0.2)
    last = seen[-1]
    assert last["stage"] == "done", seen
    assert last["task_id"] == task_id
    assert last["windows_total"] > 0
    assert last["windows_done"] == last["windows_total"]
    assert last["fraction"] == 1.0
    stages = [s["stage"] for s in seen]
    order = ["queued", "reading", "predicting", "writing", "done"]
    assert [order.index(s) for s in stages] == sorted(order.index(s) for s in stages)
    done = [s["windows_done"] for s in seen]
    assert done == sorted(done)

    result = requests.get(f"{server}/segment_async/get", params={"task_id": task_id}, timeout=60)
    assert result.status_code == 200, result.text[:300]
    direct = _post(f"{server}/segment", upload)
    assert direct.status_code == 200, direct.text
    np.testing.assert_array_equal(
        np.asarray(_nifti(result.content).dataobj), np.asarray(_nifti(direct.content).dataobj)
    )

    unknown = requests.get(
        f"{server}/segment_async/progress", params={"task_id": "nope"}, timeout=10
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"].startswith("[unknown-task]")
    missing = requests.get(f"{server}/segment_async/progress", timeout=10)
    assert missing.status_code == 400
    assert missing.json()["error"].startswith("[missing-task-id]")


def _drift_after(server: str, volumes: int) -> dict[str, Any]:
    """``/drift`` once its latest verdict covers ``volumes`` served volumes."""
    deadline = time.monotonic() + DRIFT_TIMEOUT_S
    while time.monotonic() < deadline:
        status = requests.get(f"{server}/drift", timeout=10)
        assert status.status_code == 200, status.text
        found = status.json()
        assert found["error"] is None, found["error"]
        if found["volumes_checked"] >= volumes:
            return found
        time.sleep(0.5)
    pytest.fail(f"no drift verdict over {volumes} volumes in {DRIFT_TIMEOUT_S} s: {found}")


def _gauges(server: str) -> dict[str, float]:
    """The ``minivess_drift_*`` samples of ``/metrics``, by name with labels."""
    text = requests.get(f"{server}/metrics", timeout=10).text
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("minivess_drift_")
    }


def _post_all(server: str, paths: list[Path]) -> None:
    for path in paths:
        response = _post(f"{server}/summary", path)
        assert response.status_code == 200, response.text


def test_drift_stays_quiet_for_real_volumes_and_flags_shifted_ones(
    server: str, inputs: Inputs, reference: Path
) -> None:
    before = requests.get(f"{server}/drift", timeout=10).json()
    assert before["reference"] == str(reference)
    seen = before["volumes_received"]  # every volume served so far, processed or not

    _post_all(server, inputs.real)
    quiet = _drift_after(server, seen + len(inputs.real))
    assert quiet["volumes_skipped"] == 0
    assert quiet["window_rows"] == WINDOW
    assert quiet["status"] == "ok", quiet
    assert quiet["drifted"] is False
    assert set(quiet["p_values"]) == set(quiet["features"])
    gauges = _gauges(server)
    assert gauges["minivess_drift_detected"] == 0.0
    assert gauges["minivess_drift_window_rows"] == WINDOW
    assert gauges["minivess_drift_share"] == pytest.approx(quiet["share"])
    assert gauges['minivess_drift_p_value{feature="contrast"}'] == pytest.approx(
        quiet["p_values"]["contrast"]
    )

    _post_all(server, inputs.shifted)
    drifted = _drift_after(server, seen + len(inputs.real) + len(inputs.shifted))
    assert drifted["volumes_skipped"] == 0
    assert drifted["status"] == "drift", drifted
    assert {"intensity_p50", "intensity_p99", "noise"} <= set(drifted["drifted_features"])
    gauges = _gauges(server)
    assert gauges["minivess_drift_detected"] == 1.0
    assert gauges["minivess_drift_share"] >= 0.5
    assert gauges['minivess_drift_p_value{feature="intensity_p50"}'] < 0.05
