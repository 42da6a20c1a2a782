"""Serving overhead: REST round trips to ``minivess serve`` vs the same prediction in process.

The service runs in its own process (``minivess serve --model CHECKPOINT``, one worker, the
default path); this script is the client and, between its requests, the in-process
baseline: ``Predictor.from_source(CHECKPOINT).predict(read_volume(FILE))`` with the same
number of threads. Requests and in-process predictions alternate, one at a time, so both see
the same machine state; the server is idle while the baseline runs. Reported:

* ``in_process``: read + predict (what a user's own script does before writing outputs);
* ``rest``: the single-client round trip of ``POST /segment`` (upload, read, predict, write
  the ``.nii.gz`` mask, download), and its overhead over ``in_process``;
* ``concurrent``: ``clients`` clients posting ``requests_per_client`` each, at the same time:
  throughput against the in-process rate (the worker predicts one volume at a time).

Usage (from the repository root)::

    python -m benchmarks.serving --model CHECKPOINT --file VOLUME.nii.gz [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from benchmarks.common import REPO_ROOT, configure_threads, load_average, summary

START_TIMEOUT_S = 600
REQUEST_TIMEOUT_S = 1800


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_service(model: Path, log: Path):  # type: ignore[no-untyped-def]
    """``minivess serve --model model`` on a free port of 127.0.0.1; yields its URL."""
    port = _free_port()
    minivess = Path(sys.executable).parent / "minivess"
    env = dict(os.environ, BENTOML_DO_NOT_TRACK="True")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(minivess), "serve", "--model", str(model), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=log.parent,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise SystemExit(f"minivess serve exited ({process.returncode}); see {log}")
            try:
                if requests.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or busy starting
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"minivess serve not ready after {START_TIMEOUT_S} s; see {log}")
            time.sleep(1)
        yield url
    finally:
        if process.poll() is None:  # an exited service leaves no group to stop
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def post_segment(url: str, payload: bytes, name: str) -> float:
    """One ``POST /segment`` round trip in seconds (the mask is downloaded in full)."""
    start = time.perf_counter()
    response = requests.post(
        f"{url}/segment", files={"file": (name, payload)}, timeout=REQUEST_TIMEOUT_S
    )
    response.raise_for_status()
    _ = response.content
    return time.perf_counter() - start


def run(
    model: Path,
    volume: Path,
    *,
    repeats: int = 3,
    clients: int = 2,
    requests_per_client: int = 2,
) -> dict[str, Any]:
    """Time the service against the in-process prediction of ``volume`` by ``model``.

    Args:
        model: Checkpoint (or anything ``minivess serve --model`` takes).
        volume: NIfTI or TIFF volume to segment.
        repeats: Single-client round trips, and as many in-process predictions.
        clients: Concurrent clients of the throughput run.
        requests_per_client: Requests each concurrent client sends.

    Returns:
        Timings in seconds (median and spread), the REST overhead, and throughputs.
    """
    from minivess.data.io import read_volume
    from minivess.inference import Predictor

    configure_threads()
    predictor = Predictor.from_source(model)
    payload = volume.read_bytes()
    shape: tuple[int, ...] = ()

    def in_process() -> float:
        nonlocal shape
        start = time.perf_counter()
        prediction = predictor.predict(read_volume(volume))
        shape = prediction.mask.array.shape
        return time.perf_counter() - start

    with (
        tempfile.TemporaryDirectory(prefix="minivess-bench-serve-") as tmp,
        running_service(model, Path(tmp) / "server.log") as url,
    ):
        load_before = load_average()
        post_segment(url, payload, volume.name)  # warm-up: first-use allocations
        in_process()
        local: list[float] = []
        rest: list[float] = []
        for _ in range(repeats):
            rest.append(post_segment(url, payload, volume.name))
            local.append(in_process())
        total = clients * requests_per_client
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            latencies = list(
                pool.map(lambda _: post_segment(url, payload, volume.name), range(total))
            )
        wall = time.perf_counter() - start
        load_after = load_average()
    in_process_s, rest_s = summary(local), summary(rest)
    return {
        "volume": volume.name,
        "shape": list(shape),
        "upload_bytes": len(payload),
        "backend": predictor.backend,
        "precision": predictor.settings.inference.precision,
        "in_process_s": in_process_s,
        "rest_s": rest_s,
        "rest_overhead": rest_s["median"] / in_process_s["median"] - 1.0,
        "concurrent": {
            "clients": clients,
            "requests": total,
            "latency_s": summary(latencies),
            "throughput_rps": total / wall,
            "in_process_rps": 1.0 / in_process_s["median"],
        },
        "load_average": [load_before, load_after],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse the arguments, run, print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--file", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--requests-per-client", type=int, default=2)
    args = parser.parse_args(argv)
    if min(args.repeats, args.clients, args.requests_per_client) < 1:
        parser.error("--repeats, --clients and --requests-per-client must be at least 1")
    figures = run(
        args.model.resolve(),
        args.file.resolve(),
        repeats=args.repeats,
        clients=args.clients,
        requests_per_client=args.requests_per_client,
    )
    print(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    os.chdir(REPO_ROOT)
    main()
