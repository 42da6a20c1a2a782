"""The service under concurrent load from a second process, and unusual but valid uploads.

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
from tests.v2.integration.processes import free_port, start_group, stop_group, wait_healthy

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
    process = start_group(
        [str(BIN / "minivess"), "serve", "--model", str(checkpoint), "--port", str(port)],
        log,
        env=dict(os.environ, BENTOML_DO_NOT_TRACK="True"),
        cwd=root,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(f"{url}/readyz", process, log, START_TIMEOUT_S)
        yield url, process.pid
    finally:
        stop_group(process)


def _load(
    url: str, pid: int, volume: Path, folder: Path, *, clients: int, requests: int, rounds: int
) -> dict:
    """The report of ``benchmarks/service_load.py`` run against the service, in its own process."""
    report = folder / "load.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.service_load",
            *("--url", url, "--file", str(volume), "--server-pid", str(pid)),
            *("--clients", str(clients), "--requests", str(requests), "--rounds", str(rounds)),
            *("--out", str(report)),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(report.read_text())


def test_concurrent_clients_get_every_answer_and_the_service_keeps_serving(
    service: tuple[str, int], vesselnn_dir: Path, tmp_path: Path
) -> None:
    url, pid = service
    source = vesselnn_dir / "denoised" / "burgess2014_noisySparseVessels_BM4D_denoised.tif"
    crop = np.ascontiguousarray(read_tiff(source).array[128:256, 128:256, :])
    volume = write_nifti(tmp_path / "crop.nii.gz", crop, like=Volume(crop, np.eye(4)))
    figures = _load(url, pid, volume, tmp_path, clients=CLIENTS, requests=REQUESTS, rounds=ROUNDS)
    print(json.dumps(figures["rounds"], indent=1))
    assert figures["errors"] == []
    for round_ in figures["raw"]:
        assert len(round_["latencies_s"]) == REQUESTS
    assert requests.get(f"{url}/readyz", timeout=30).status_code == 200


def _crop(vesselnn_dir: Path, folder: Path, name: str) -> Path:
    source = vesselnn_dir / "denoised" / "burgess2014_noisySparseVessels_BM4D_denoised.tif"
    crop = np.ascontiguousarray(read_tiff(source).array[:64, :64, :])
    return write_nifti(folder / name, crop, like=Volume(crop, np.eye(4)))


def test_unicode_file_name_is_accepted_and_never_used_as_a_path(
    service: tuple[str, int], vesselnn_dir: Path, tmp_path: Path
) -> None:
    url, _ = service
    volume = _crop(vesselnn_dir, tmp_path, "crop.nii.gz")
    name = "Gefäß 血管 ✓.nii.gz"
    response = requests.post(
        f"{url}/summary", files={"file": (name, volume.read_bytes())}, timeout=600
    )
    assert response.status_code == 200, response.text
    assert response.json()["shape"] == [64, 64, 10]


def test_slow_upload_is_served_while_other_clients_are(
    service: tuple[str, int], vesselnn_dir: Path, tmp_path: Path
) -> None:
    """A client trickling its body in small pieces neither fails nor blocks a fast client."""
    import threading
    import time

    url, _ = service
    volume = _crop(vesselnn_dir, tmp_path, "crop.nii.gz").read_bytes()
    boundary = "minivess-slow-upload"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="slow.nii.gz"'
        "\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = head + volume + f"\r\n--{boundary}--\r\n".encode()

    def trickle():  # the body in 40 pieces, 0.1 s apart
        step = -(-len(body) // 40)
        for start in range(0, len(body), step):
            time.sleep(0.1)
            yield body[start : start + step]

    slow: dict[str, requests.Response] = {}
    thread = threading.Thread(
        target=lambda: slow.setdefault(
            "response",
            requests.post(
                f"{url}/summary",
                data=trickle(),
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
                timeout=600,
            ),
        )
    )
    thread.start()
    fast = requests.post(f"{url}/summary", files={"file": ("fast.nii.gz", volume)}, timeout=600)
    thread.join(timeout=600)
    assert fast.status_code == 200, fast.text
    assert slow["response"].status_code == 200, slow["response"].text
    assert slow["response"].json()["vessel_voxels"] == fast.json()["vessel_voxels"]


def test_worker_gives_its_memory_back_once_idle(
    service: tuple[str, int], vesselnn_dir: Path, tmp_path: Path
) -> None:
    """After a burst of full-size requests the server's memory returns to its idle level.

    Without the idle release (``serve.release_memory_idle_s``), glibc keeps the freed heap of
    the request threads and the server stays hundreds of MiB above where it started.
    """
    import time

    url, pid = service
    source = vesselnn_dir / "denoised" / "burgess2014_noisySparseVessels_BM4D_denoised.tif"
    full = read_tiff(source).array  # 512x512x10, real
    volume = write_nifti(tmp_path / "full.nii.gz", full, like=Volume(full, np.eye(4)))
    time.sleep(3)  # earlier tests' requests are released by now
    (burst,) = _load(url, pid, volume, tmp_path, clients=2, requests=4, rounds=1)["rounds"]
    assert burst["errors"] == 0
    before, peak, settled = (burst[f"rss_{k}_mib"] for k in ("before", "peak", "after"))
    grown = peak - before
    assert grown > 100, f"the burst did not exercise memory (peak {peak:.0f}, idle {before:.0f})"
    print(f"server RSS idle {before:.0f} / peak {peak:.0f} / settled {settled:.0f} MiB")
    assert settled - before <= max(32.0, 0.25 * grown), (
        f"server RSS stayed at {settled:.0f} MiB after the burst (idle {before:.0f}, "
        f"peak {peak:.0f} MiB)"
    )
