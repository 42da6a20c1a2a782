"""The asynchronous segmentation task over real HTTP: submit, poll the status, fetch the mask.

``minivess serve --model best.pt`` runs in its own process group; a crop of a real VesselNN
volume is submitted and the mask fetched later is compared with the in-process Predictor.
"""

from __future__ import annotations

import gzip
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests
from tests.v2.conftest import PREDICTION_EXTRA, TINY_SEGRESNET
from tests.v2.integration.processes import free_port, start_group, stop_group, wait_healthy

from minivess.data.io import read_tiff, read_volume, write_nifti
from minivess.data.volume import Volume
from minivess.inference import Predictor

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 240
TASK_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from minivess.adapters import build_adapter

    torch.manual_seed(0)
    adapter = build_adapter("segresnet", TINY_SEGRESNET)
    root = tmp_path_factory.mktemp("async-model")
    return adapter.save_checkpoint(root / "best.pt", extra=PREDICTION_EXTRA)


@pytest.fixture(scope="module")
def server(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("minivess-serve-async")
    port = free_port()
    env = dict(os.environ, BENTOML_DO_NOT_TRACK="True", MLFLOW_DISABLE_TELEMETRY="true")
    env["BENTOML_HOME"] = str(folder / "bentoml-home")
    env.pop("BENTOML_RESULT_STORE", None)
    command = [str(BIN / "minivess"), "serve", "--model", str(checkpoint), "--port", str(port)]
    log = folder / "server.log"
    process = start_group(command, log, env=env, cwd=folder)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{url}/readyz", process, log, START_TIMEOUT_S)
        # BentoML's shared default task store would be here by now; services starting side by
        # side deleted it under each other (sqlite "disk I/O error"), so each keeps its own
        assert not (folder / "bentoml-home" / "task_result.db").exists()
        yield url
    finally:
        stop_group(process)


def test_a_submitted_volume_is_segmented_like_the_in_process_predictor(
    server: str, checkpoint: Path, vesselnn_dir: Path, tmp_path: Path
) -> None:
    source = vesselnn_dir / "denoised" / "burgess2014_noisySparseVessels_BM4D_denoised.tif"
    stack = read_tiff(source).array[192:288, 256:336, :]
    nifti = write_nifti(tmp_path / "crop.nii.gz", stack, like=Volume(stack, np.eye(4)))
    expected = Predictor.from_source(checkpoint).predict(read_volume(nifti))
    with nifti.open("rb") as fh:
        submitted = requests.post(
            f"{server}/segment_async/submit", files={"file": ("crop.nii.gz", fh)}, timeout=60
        )
    assert submitted.status_code == 200, submitted.text
    task_id = submitted.json()["task_id"]
    deadline = time.monotonic() + TASK_TIMEOUT_S
    statuses = []
    while time.monotonic() < deadline:
        status = requests.get(
            f"{server}/segment_async/status", params={"task_id": task_id}, timeout=10
        )
        assert status.status_code == 200, status.text
        statuses.append(status.json()["status"])
        if statuses[-1] not in ("in_progress", "pending"):
            break
        time.sleep(0.3)
    assert statuses[-1] == "completed", statuses
    result = requests.get(f"{server}/segment_async/get", params={"task_id": task_id}, timeout=60)
    assert result.status_code == 200, result.text[:300]
    mask = nib.Nifti1Image.from_bytes(gzip.decompress(result.content))
    np.testing.assert_array_equal(np.asarray(mask.dataobj), expected.mask.array)


def test_a_bad_upload_is_refused_at_submit(server: str) -> None:
    refused = requests.post(
        f"{server}/segment_async/submit", files={"volume": ("a.nii", b"x")}, timeout=30
    )
    assert 400 <= refused.status_code < 500, refused.text
    not_multipart = requests.post(f"{server}/segment_async/submit", data=b"raw", timeout=30)
    assert 400 <= not_multipart.status_code < 500
