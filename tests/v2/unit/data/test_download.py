"""The VesselNN downloader against a real HTTP server on 127.0.0.1 serving the shared files."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest

from minivess.data.download import (
    download_vesselnn,
    verify_vesselnn,
    vesselnn_manifest,
)
from minivess.data.sources.vesselnn import VesselNNSource
from minivess.errors import ConfigError, DataError

pytestmark = pytest.mark.integration

SMALL = "burgess2014_noisySparseVessels"  # the smallest shared pair (1.5 MB with metadata)
IMAGE = f"denoised/{SMALL}_BM4D_denoised.tif"
LABEL = f"labels/{SMALL}_labels_v1.tif"
SHARED_IDS = [
    "burgess2014_bbbDisruption",
    "burgess2014_lowerRes_hiSNR",
    "burgess2014_noisySparseVessels",
    "poon2015_BBB_Leakage",
    "poon2015_plaqueVessels",
    "santos2015_lowContrastVessels",
]


@dataclass
class FileServer:
    """What the test HTTP server serves from ``root`` and which requests it saw."""

    root: Path
    url: str = ""
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    tamper: set[str] = field(default_factory=set)  # paths served with one byte flipped
    drop_once: set[str] = field(default_factory=set)  # paths cut off halfway, once
    ignore_range: bool = False  # answer 200 with the whole file even to a Range request

    def ranges(self, path: str) -> list[str | None]:
        return [rng for p, rng in self.requests if p == path]


def _handler(files: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            rel = unquote(urlparse(self.path).path).lstrip("/")
            rng = self.headers.get("Range")
            files.requests.append((rel, rng))
            target = files.root / rel
            if not target.is_file():
                self.send_error(404)
                return
            data = target.read_bytes()
            if rel in files.tamper:
                data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
            start = 0
            if rng and not files.ignore_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_error(416)
                    return
            body = data[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if rel in files.drop_once:
                files.drop_once.discard(rel)
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def server(vesselnn_dir: Path) -> Iterator[FileServer]:
    files = FileServer(vesselnn_dir)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(files))
    files.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield files
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _get(server: FileServer, dest: Path, names: list[str], **kwargs: object) -> list[Path]:
    return download_vesselnn(dest, base_url=server.url, names=names, timeout=10, **kwargs)  # type: ignore[arg-type]


def test_manifest_is_packaged_and_matches_the_shared_copy(vesselnn_dir: Path):
    entries = vesselnn_manifest()
    assert len({e.case_id for e in entries}) == 9
    assert len(entries) == 25  # the two santos2015 stacks have no metadata upstream
    shared = (vesselnn_dir / "UPSTREAM_MANIFEST.tsv").read_text().splitlines()[1:]
    assert [f"{e.path}\t{e.size}\t{e.sha256}" for e in entries] == shared


def test_shared_data_matches_the_pinned_commit(vesselnn_dir: Path):
    assert verify_vesselnn(vesselnn_dir, names=SHARED_IDS) == []


@pytest.mark.filterwarnings("ignore::minivess.data.sources.vesselnn.MissingMetadataWarning")
def test_download_gives_the_upstream_layout_the_source_reads(
    server: FileServer, vesselnn_dir: Path, tmp_path: Path
):
    names = ["burgess2014_lowerRes_hiSNR", SMALL]
    paths = _get(server, tmp_path, names)
    assert len(paths) == 6
    for path in paths:
        rel = path.relative_to(tmp_path)
        assert path.read_bytes() == (vesselnn_dir / rel).read_bytes()
    assert not list(tmp_path.rglob("*.part"))
    assert verify_vesselnn(tmp_path, names=names) == []

    source = VesselNNSource()
    cases = source.discover(tmp_path)
    assert [c.case_id for c in cases] == names
    shared = {c.case_id: c for c in source.discover(vesselnn_dir) if c.case_id in names}
    image, label = source.load(cases[0])
    ref_image, ref_label = source.load(shared[cases[0].case_id])
    assert label is not None
    assert ref_label is not None
    np.testing.assert_array_equal(image.array, ref_image.array)
    np.testing.assert_array_equal(label.array, ref_label.array)
    assert image.spacing == ref_image.spacing == pytest.approx((1.59, 1.59, 5.0))


def test_tampered_file_is_deleted_and_reported_with_both_hashes(server: FileServer, tmp_path: Path):
    server.tamper.add(LABEL)
    with pytest.raises(DataError) as exc:
        _get(server, tmp_path, [SMALL])
    expected = next(e.sha256 for e in vesselnn_manifest() if e.path == LABEL)
    data = bytearray((server.root / LABEL).read_bytes())
    data[100] ^= 0xFF
    assert exc.value.rule == "checksum"
    assert exc.value.path == tmp_path / LABEL
    assert expected in exc.value.message
    assert hashlib.sha256(data).hexdigest() in exc.value.message
    assert not (tmp_path / LABEL).exists()
    assert not list(tmp_path.rglob("*.part"))
    assert verify_vesselnn(tmp_path, names=[SMALL]) == [f"{tmp_path / LABEL}: missing"]


def test_dropped_connection_is_resumed_with_a_range_request(server: FileServer, tmp_path: Path):
    server.drop_once.add(IMAGE)
    _get(server, tmp_path, [SMALL], retries=1)
    first, second = server.ranges(IMAGE)
    assert first is None
    assert second is not None
    assert second.startswith("bytes=")
    assert second != "bytes=0-"
    assert verify_vesselnn(tmp_path, names=[SMALL]) == []


def test_interrupted_run_keeps_the_part_and_the_next_run_resumes(
    server: FileServer, tmp_path: Path
):
    server.drop_once.add(IMAGE)
    with pytest.raises(DataError) as exc:
        _get(server, tmp_path, [SMALL], retries=0)
    assert exc.value.rule == "download"
    part = tmp_path / (IMAGE + ".part")
    kept = part.stat().st_size
    assert 0 < kept < (server.root / IMAGE).stat().st_size
    assert not (tmp_path / IMAGE).exists()

    _get(server, tmp_path, [SMALL], retries=0)
    assert server.ranges(IMAGE)[-1] == f"bytes={kept}-"
    assert not part.exists()
    assert verify_vesselnn(tmp_path, names=[SMALL]) == []


def test_server_ignoring_range_restarts_the_part(server: FileServer, tmp_path: Path):
    server.ignore_range = True
    part = tmp_path / (IMAGE + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"not the start of the upstream file")
    _get(server, tmp_path, [SMALL])
    assert server.ranges(IMAGE) == ["bytes=34-"]
    assert verify_vesselnn(tmp_path, names=[SMALL]) == []


def test_complete_cache_makes_no_requests(server: FileServer, tmp_path: Path):
    _get(server, tmp_path, [SMALL])
    seen = len(server.requests)
    calls: list[tuple[str, int, int]] = []
    paths = _get(server, tmp_path, [SMALL], progress=lambda *a: calls.append(a))
    assert len(server.requests) == seen == 3
    assert len(paths) == 3
    assert all(done == total for _, done, total in calls)
    assert len(calls) == 3


def test_progress_reports_bytes_until_complete(server: FileServer, tmp_path: Path):
    calls: list[tuple[str, int, int]] = []
    _get(server, tmp_path, [SMALL], progress=lambda *a: calls.append(a))
    image_calls = [(done, total) for name, done, total in calls if name == IMAGE]
    size = (server.root / IMAGE).stat().st_size
    assert image_calls[0] == (0, size)
    assert image_calls[-1] == (size, size)
    assert [d for d, _ in image_calls] == sorted(d for d, _ in image_calls)


def test_corrupt_file_under_the_final_name_is_replaced(server: FileServer, tmp_path: Path):
    (tmp_path / LABEL).parent.mkdir(parents=True)
    (tmp_path / LABEL).write_bytes(b"stale")
    _get(server, tmp_path, [SMALL])
    assert verify_vesselnn(tmp_path, names=[SMALL]) == []


def test_missing_remote_file_fails_at_once(server: FileServer, tmp_path: Path):
    with pytest.raises(DataError) as exc:
        download_vesselnn(tmp_path, base_url=server.url + "/nowhere", names=[SMALL], retries=3)
    assert exc.value.rule == "download"
    assert "404" in exc.value.message
    assert len(server.requests) == 1


def test_unknown_name_lists_the_valid_ones(tmp_path: Path):
    with pytest.raises(ConfigError, match="poon2015_BBB_Leakage"):
        download_vesselnn(tmp_path, names=["no_such_stack"])
