"""The load benchmark's leak verdict, and its report from a short run against a local server."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def service_load(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    sys.modules.pop("benchmarks", None)
    sys.modules.pop("benchmarks.service_load", None)
    import benchmarks.service_load as module

    return module


def test_steady_growth_is_a_possible_leak(service_load: ModuleType) -> None:
    leak = service_load.leak_verdict([500.0, 520.0, 540.0, 560.0, 580.0], tolerance_mib=50)
    assert leak["slope_mib_per_round"] == 20.0
    assert leak["growth_mib"] == 80.0
    assert leak["within_tolerance"] is False
    assert leak["verdict"].startswith("possible leak: settled RSS +80.0 MiB")
    assert "+20.00 MiB/round" in leak["verdict"]


def test_memory_that_returns_to_its_level_is_no_leak(service_load: ModuleType) -> None:
    leak = service_load.leak_verdict([812.4, 830.9, 805.2, 821.7], tolerance_mib=50)
    assert leak["within_tolerance"] is True
    assert leak["growth_mib"] == 9.3
    assert leak["verdict"].startswith("no leak seen")
    assert leak["settled_rss_mib"] == [812.4, 830.9, 805.2, 821.7]


def test_shrinking_memory_is_within_tolerance(service_load: ModuleType) -> None:
    leak = service_load.leak_verdict([900.0, 700.0], tolerance_mib=0)
    assert leak["within_tolerance"] is True
    assert leak["slope_mib_per_round"] == -200.0


def test_slope_is_the_least_squares_fit(service_load: ModuleType) -> None:
    settled = [100.0, 131.0, 104.0, 160.0, 149.0, 170.0]
    expected = np.polyfit(np.arange(len(settled)), settled, deg=1)[0]
    leak = service_load.leak_verdict(settled, tolerance_mib=50)
    assert leak["slope_mib_per_round"] == pytest.approx(expected, abs=0.005)
    assert leak["within_tolerance"] is False  # +70 MiB from first to last


def test_memory_left_above_the_idle_start_is_reported(service_load: ModuleType) -> None:
    kept = service_load.leak_verdict([1443.0, 1533.0, 1533.0], tolerance_mib=50, start_mib=1162.0)
    assert kept["above_start_mib"] == 371.0
    assert kept["returned_to_start"] is False
    assert "+371.0 MiB from the idle start (did not return)" in kept["verdict"]
    given_back = service_load.leak_verdict([1184.0, 1185.2], tolerance_mib=50, start_mib=1162.5)
    assert given_back["returned_to_start"] is True
    assert given_back["verdict"].endswith("+22.7 MiB from the idle start (returned)")


def test_one_round_gives_no_verdict(service_load: ModuleType) -> None:
    leak = service_load.leak_verdict([640.0], tolerance_mib=50)
    assert leak["slope_mib_per_round"] is None
    assert leak["within_tolerance"] is None
    assert "--rounds 2" in leak["verdict"]


@pytest.mark.parametrize(
    ("settled", "tolerance", "message"),
    [([], 50.0, "no rounds"), ([1.0, 2.0], -1.0, "tolerance must be >= 0")],
)
def test_meaningless_input_is_refused(
    service_load: ModuleType, settled: list[float], tolerance: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        service_load.leak_verdict(settled, tolerance_mib=tolerance)


class _Segment(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"mask")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def segment_server() -> Iterator[str]:
    """A local HTTP server answering every POST with 200 and a small body."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Segment)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_report_holds_the_settled_memory_of_every_round_and_the_verdict(
    service_load: ModuleType,
    segment_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(service_load, "SETTLE_S", 0.0)
    volume = tmp_path / "volume.nii.gz"
    volume.write_bytes(b"\x00" * 1024)
    out = tmp_path / "load.json"
    service_load.main(
        [
            *("--url", segment_server, "--file", str(volume), "--server-pid", str(os.getpid())),
            *("--clients", "2", "--requests", "4", "--rounds", "3", "--out", str(out)),
            *("--leak-tolerance-mib", "64"),
        ]
    )
    report = json.loads(out.read_text())
    leak = report["leak"]
    assert leak["rounds"] == 3
    assert leak["tolerance_mib"] == 64
    assert leak["settled_rss_mib"] == [r["rss_after_mib"] for r in report["rounds"]]
    assert all(value > 0 for value in leak["settled_rss_mib"])
    assert leak["start_rss_mib"] == report["rounds"][0]["rss_before_mib"]
    assert report["errors"] == []
    assert capsys.readouterr().out.rstrip().endswith(leak["verdict"])


@pytest.mark.parametrize("bad", [["--rounds", "0"], ["--leak-tolerance-mib", "-5"]])
def test_bad_arguments_exit_2(service_load: ModuleType, tmp_path: Path, bad: list[str]) -> None:
    volume = tmp_path / "volume.nii.gz"
    volume.write_bytes(b"\x00")
    args = ["--url", "http://127.0.0.1:1", "--file", str(volume), "--server-pid", "1", *bad]
    with pytest.raises(SystemExit) as exit_info:
        service_load.main(args)
    assert exit_info.value.code == 2
