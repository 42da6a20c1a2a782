"""The service under concurrent load from a second process (a reduced form of the benchmark).

``minivess serve`` runs a seeded tiny checkpoint; ``benchmarks/service_load.py`` runs in its own
process and posts a crop of a real VesselNN volume from 4 client threads, in two rounds. Every
request must succeed and the service must still answer afterwards. Latency and memory are
printed, not asserted: they depend on the machine (docs/benchmarks.md has the full run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from tests.v2.conftest import PREDICTION_EXTRA, REPO_ROOT, TINY_SEGRESNET
from tests.v2.integration.processes import free_port, stop_group, wait_healthy

from minivess.data.io import read_tiff, write_nifti
from minivess.data.volume import Volume

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 600  # a bound, not a measurement
CLIENTS, REQUESTS, ROUNDS = 4, 10, 2


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    import torch

    from minivess.adapters import build_adapter

    root = tmp_path_factory.mktemp("load")
    torch.manual_seed(0)
    checkpoint = build_adapter("segresnet", TINY_SEGRESNET).save_checkpoint(
        root / "best.pt", extra=PREDICTION_EXTRA
    )
    port = free_port()
    log = root / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "minivess"), "serve", "--model", str(checkpoint), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=root,
            env=dict(os.environ, BENTOML_DO_NOT_TRACK="True"),
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(f"{url}/readyz", process, log, START_TIMEOUT_S)
        yield url, process.pid
    finally:
        stop_group(process)


def test_concurrent_clients_get_every_answer_and_the_service_keeps_serving(
    service: tuple[str, int], vesselnn_dir: Path, tmp_path: Path
) -> None:
    url, pid = service
    source = vesselnn_dir / "denoised" / "burgess2014_noisySparseVessels_BM4D_denoised.tif"
    crop = np.ascontiguousarray(read_tiff(source).array[128:256, 128:256, :])
    volume = write_nifti(tmp_path / "crop.nii.gz", crop, like=Volume(crop, np.eye(4)))
    report = tmp_path / "load.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.service_load",
            *("--url", url, "--file", str(volume), "--server-pid", str(pid)),
            *("--clients", str(CLIENTS), "--requests", str(REQUESTS), "--rounds", str(ROUNDS)),
            *("--out", str(report)),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(report.read_text())
    print(json.dumps(figures["rounds"], indent=1))
    assert figures["errors"] == []
    for round_ in figures["raw"]:
        assert len(round_["latencies_s"]) == REQUESTS
    assert requests.get(f"{url}/readyz", timeout=30).status_code == 200
