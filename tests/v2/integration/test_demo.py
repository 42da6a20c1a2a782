"""``minivess demo`` served on 127.0.0.1: API round trips with gradio_client, and a browser.

One server (the real CLI in its own process group) serves every test of this module: a tiny
seeded SegResNet checkpoint segments a 128 x 128 x Z crop of a real VesselNN volume.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from tests.v2.conftest import PREDICTION_EXTRA, TINY_SEGRESNET
from tests.v2.integration.processes import free_port, start_group, stop_group, wait_healthy

from minivess.adapters import build_adapter
from minivess.data.io import read_tiff, read_volume, write_nifti
from minivess.data.volume import Volume
from minivess.inference import Predictor

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
REPO_ROOT = Path(__file__).resolve().parents[3]
START_TIMEOUT_S = 180
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
EXAMPLE = "example_crop.tif"
MAX_UPLOAD_MB = 2
MAX_VOXELS = 300_000
"""Above the 128 x 128 x Z crops (Z <= 15 in the first VesselNN volume), below 128^2 x 20."""


@dataclass(frozen=True)
class DemoServer:
    url: str
    checkpoint: Path
    crop: Path
    example: Path
    log: Path
    cache: Path


def _write_inputs(root: Path, vesselnn_dir: Path) -> tuple[Path, Path, Path]:
    """A seeded checkpoint, a NIfTI crop of a real volume, and the same crop as a TIFF example."""
    torch.manual_seed(0)
    adapter = build_adapter("segresnet", TINY_SEGRESNET)
    checkpoint = adapter.save_checkpoint(root / "model" / "best.pt", extra=PREDICTION_EXTRA)
    source = read_tiff(sorted((vesselnn_dir / "denoised").glob("*.tif"))[0])
    x0, y0 = (source.shape[0] - 128) // 2, (source.shape[1] - 128) // 2
    voxels = source.array[x0 : x0 + 128, y0 : y0 + 128, :15]  # at most MAX_VOXELS
    crop = Volume(np.ascontiguousarray(voxels), source.affine)
    nifti = write_nifti(root / "crop.nii.gz", crop.array, like=crop)
    examples = root / "examples"
    examples.mkdir()
    tifffile.imwrite(examples / EXAMPLE, np.transpose(crop.array, (2, 1, 0)))  # (Z, Y, X)
    return checkpoint, nifti, examples / EXAMPLE


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, vesselnn_dir: Path) -> Iterator[DemoServer]:
    """``minivess demo`` on a free port, in its own process group, stopped afterwards."""
    root = tmp_path_factory.mktemp("demo")
    checkpoint, crop, example = _write_inputs(root, vesselnn_dir)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = root / "demo.log"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(root / "gr"))
    env["MINIVESS_CACHE_DIR"] = str(root / "cache")  # ONNX exports, shared with the test
    env["MINIVESS_DEMO__MAX_UPLOAD_MB"] = str(MAX_UPLOAD_MB)
    env["MINIVESS_DEMO__MAX_VOXELS"] = str(MAX_VOXELS)
    command = [str(BIN / "minivess"), "demo", "--model", str(checkpoint), "--port", str(port)]
    process = start_group(
        [*command, "--examples", str(example.parent)], log, env=env, cwd=REPO_ROOT
    )
    try:
        wait_healthy(url, process, log, START_TIMEOUT_S)
        yield DemoServer(url, checkpoint, crop, example, log, root / "cache")
    finally:
        stop_group(process)


@pytest.fixture(scope="module")
def client(server: DemoServer, tmp_path_factory: pytest.TempPathFactory):
    from gradio_client import Client

    downloads = tmp_path_factory.mktemp("downloads")
    return Client(server.url, verbose=False, download_files=downloads, analytics_enabled=False)


def _segment(client, server: DemoServer, *, upload=None, example=None, model=None, backend="torch"):
    from gradio_client import handle_file

    return client.predict(
        handle_file(str(upload)) if upload is not None else None,
        example,
        str(model if model is not None else server.checkpoint),
        backend,
        "mask",
        api_name="/segment",
    )


def _assert_png(path: str | Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    assert min(pixels.shape[:2]) > 1
    assert pixels.std() > 0  # not a blank image
    return pixels


def test_segment_upload_round_trip_matches_the_predictor(client, server: DemoServer) -> None:
    slice_png, projection_png, depth, _, summary, mask_path = _segment(
        client, server, upload=server.crop
    )

    downloaded = nib.load(mask_path)
    source = nib.load(server.crop)
    assert downloaded.shape == source.shape
    np.testing.assert_allclose(downloaded.affine, source.affine)
    expected = Predictor.from_source(server.checkpoint).predict(read_volume(server.crop))
    np.testing.assert_array_equal(np.asarray(downloaded.dataobj), expected.mask.array)
    assert Path(mask_path).name == "crop_mask.nii.gz"

    voxels = int(np.count_nonzero(expected.mask.array))
    assert summary["vessel_voxels"] == voxels
    assert summary["vessel_fraction"] == pytest.approx(voxels / expected.mask.array.size, abs=1e-6)
    assert summary["model"] == str(server.checkpoint)
    assert summary["backend"] == "torch"
    assert summary["prediction_s"] > 0
    assert depth["value"] == source.shape[2] // 2
    assert depth["maximum"] == source.shape[2] - 1
    _assert_png(slice_png)
    _assert_png(projection_png)

    # The session keeps the prediction: other slices and overlays need no new run.
    first = _assert_png(client.predict(0, "mask", api_name="/slice"))
    entropy_slice, entropy_projection = client.predict(0, "entropy", api_name="/overlay")
    assert not np.array_equal(first, _assert_png(entropy_slice))
    _assert_png(entropy_projection)


def test_example_volume_segments_like_its_upload(client, server: DemoServer) -> None:
    *_, summary, mask_path = _segment(client, server, example=EXAMPLE)
    expected = Predictor.from_source(server.checkpoint).predict(read_volume(server.example))
    np.testing.assert_array_equal(np.asarray(nib.load(mask_path).dataobj), expected.mask.array)
    assert summary["volume"] == EXAMPLE


def test_onnx_backend_segments_like_the_onnx_predictor(
    client, server: DemoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    *_, summary, mask_path = _segment(client, server, upload=server.crop, backend="onnx")
    monkeypatch.setenv("MINIVESS_CACHE_DIR", str(server.cache))  # reuse the server's export
    onnx = Predictor.from_source(server.checkpoint, backend="onnx")
    expected = onnx.predict(read_volume(server.crop))
    np.testing.assert_array_equal(np.asarray(nib.load(mask_path).dataobj), expected.mask.array)
    assert summary["backend"] == "onnx"


def _bad_inputs(root: Path) -> dict[str, tuple[Path, str]]:
    """Files the demo must refuse, with the rule its message names."""
    corrupt = root / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b not really gzip, not a NIfTI")
    flat = root / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((32, 32), np.float32), np.eye(4)), flat)
    series = root / "series.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((16, 16, 8, 3), np.float32), np.eye(4)), series)
    text = root / "notes.txt"
    text.write_text("not a volume")
    large = root / "large.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((128, 128, 20), np.uint8), np.eye(4)), large)
    return {
        "corrupt": (corrupt, "corrupt-file"),
        "2d": (flat, "dimensionality"),
        "4d": (series, "dimensionality"),
        "wrong type": (text, "file-type"),
        "too many voxels": (large, "too-many-voxels"),
    }


def test_bad_inputs_give_clear_errors_and_the_app_keeps_working(
    client, server: DemoServer, tmp_path: Path
) -> None:
    from gradio_client.exceptions import AppError

    for case, (path, rule) in _bad_inputs(tmp_path).items():
        with pytest.raises(AppError) as caught:
            _segment(client, server, upload=path)
        message = str(caught.value)
        assert f"{path.name}: [{rule}]" in message, case
        assert "Traceback" not in message
    with pytest.raises(AppError, match=r"\[missing\] checkpoint file does not exist"):
        _segment(client, server, upload=server.crop, model=tmp_path / "nothing.pt")
    with pytest.raises(AppError, match=r"\[no-input\] upload a volume"):
        _segment(client, server)

    oversized = tmp_path / "oversized.nii.gz"
    oversized.write_bytes(b"\0" * (MAX_UPLOAD_MB * 2**20 + 1))
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        _segment(client, server, upload=oversized)

    *_, summary, mask_path = _segment(client, server, upload=server.crop)
    assert nib.load(mask_path).shape == nib.load(server.crop).shape
    assert summary["volume"] == "crop.nii.gz"
    assert "Traceback" not in server.log.read_text()


def _chrome():
    """Headless Chromium through selenium; skipped locally without it, a failure in CI."""
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        reason = f"headless browser test needs {CHROMIUM} and {CHROMEDRIVER}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,1000")
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def test_browser_uploads_segments_and_renders(server: DemoServer, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _chrome()
    try:
        browser.get(server.url)
        wait = WebDriverWait(browser, START_TIMEOUT_S)
        upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#upload input")))
        upload.send_keys(str(server.crop))
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#upload"), "crop"))
        browser.find_element(By.CSS_SELECTOR, "#segment").click()
        image = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#slice-view img")))
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#mask a")))
        wait.until(lambda _: image.get_attribute("naturalWidth") not in (None, "0"))
        assert "vessel_fraction" in browser.find_element(By.CSS_SELECTOR, "#summary").text
        screenshot = tmp_path / "demo.png"
        assert browser.save_screenshot(str(screenshot))
    finally:
        browser.quit()

    pixels = _assert_png(screenshot)
    assert min(pixels.shape[:2]) >= 500
