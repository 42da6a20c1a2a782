"""ONNX Runtime's OpenVINO provider, run for real in ``uv run --with onnxruntime-openvino``.

The OpenVINO build of ONNX Runtime replaces the ``onnxruntime`` module, so it cannot sit in the
project's environment beside the stock build; uv overlays it for one subprocess
(:mod:`tests.v2.integration.openvino_probe`), which measures the provider against the torch path
in fp32 on real volumes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from minivess.inference.runners import OPENVINO_REQUIREMENT, OnnxRunner

if TYPE_CHECKING:
    from tests.v2.conftest import OnnxModel

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO_ROOT = Path(__file__).resolve().parents[3]
MIN_AGREEMENT = 0.999
FP32_ATOL = 1e-4


def _unavailable(reason: str) -> None:
    """Skip on a developer machine; fail in CI, which has uv and PyPI."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def probe(onnx_model: OnnxModel, vesselnn_dir: Path) -> dict:
    uv = shutil.which("uv")
    if uv is None:
        _unavailable("uv is not on PATH; it overlays onnxruntime-openvino for this test")
    command = [str(uv), "run", "--no-sync", "--python", sys.executable]
    command += ["--with", OPENVINO_REQUIREMENT, "python", "-m"]
    command += ["tests.v2.integration.openvino_probe", str(onnx_model.checkpoint)]
    command += [str(onnx_model.onnx), str(vesselnn_dir)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    if done.returncode != 0 and "Traceback" not in done.stderr:  # uv failed, not the probe
        _unavailable(f"uv could not install {OPENVINO_REQUIREMENT}: {done.stderr[-500:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(report, indent=1))
    return report


def test_the_openvino_build_is_picked_for_cpu(probe: dict) -> None:
    assert probe["onnxruntime"] == OPENVINO_REQUIREMENT.split("==")[1]
    assert probe["providers"] == {"auto": "openvino", "fp32": "openvino"}
    bf16 = "bf16" if probe["cpu_has_native_bf16"] else "fp32"
    assert probe["precisions"] == {"auto": bf16, "fp32": "fp32"}
    assert probe["from_source_precision"] == bf16  # .onnx files follow "auto" too
    assert "needs a CUDA device" in probe["fp16_error"]


def test_openvino_fp32_matches_the_torch_path(probe: dict) -> None:
    assert probe["max_probability_diff"]["fp32"] < FP32_ATOL
    assert probe["min_mask_agreement"]["fp32"] >= MIN_AGREEMENT


def test_openvino_auto_precision_is_as_faithful_as_torch_bf16(probe: dict) -> None:
    # The seeded, untrained network puts many voxels near p = 0.5, so any bf16 path flips some
    # (torch's own bf16 keeps ~99.7% here; on the trained model both keep > 99.99%,
    # docs/benchmarks.md). OpenVINO in "auto" must do no worse than the torch bf16 path.
    agreement, diff = probe["min_mask_agreement"], probe["max_probability_diff"]
    if probe["precisions"]["auto"] == "fp32":
        assert agreement["auto"] >= MIN_AGREEMENT
    else:
        assert agreement["auto"] >= agreement["torch-bf16"] - 0.001
        assert diff["auto"] <= 1.5 * diff["torch-bf16"]
    assert probe["static_sessions"] == 1  # one compiled session per window batch shape


def test_the_stock_build_stays_on_the_cpu_provider_in_fp32(onnx_model: OnnxModel) -> None:
    runner = OnnxRunner.from_file(onnx_model.onnx)
    assert (runner.provider, runner.precision) == ("cpu", "fp32")
