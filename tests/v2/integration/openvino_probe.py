"""Runs under ``uv run --with onnxruntime-openvino``: ONNX Runtime's OpenVINO provider vs torch.

Invoked by ``test_openvino_provider.py`` (the stock environment has the plain ``onnxruntime``,
whose module the OpenVINO build replaces); prints one JSON object of what it measured.

Usage: ``python -m tests.v2.integration.openvino_probe CHECKPOINT ONNX VESSELNN_DIR``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(checkpoint: Path, onnx: Path, vesselnn: Path) -> dict[str, object]:
    """What the OpenVINO provider gives on two real crops, against the torch path in fp32."""
    import onnxruntime

    from minivess.adapters import class_mask, load_checkpoint
    from minivess.adapters.inference import cpu_has_native_bf16
    from minivess.data.io import read_volume
    from minivess.data.volume import Volume
    from minivess.errors import ConfigError
    from minivess.inference import PredictionSettings, Predictor
    from minivess.inference.runners import OnnxRunner

    settings = PredictionSettings.from_checkpoint(load_checkpoint(checkpoint)[1])
    reference = Predictor.from_source(checkpoint, backend="torch", precision="fp32")
    torch_bf16 = Predictor.from_source(checkpoint, backend="torch", precision="bf16")
    runners = {name: OnnxRunner.from_file(onnx, precision=name) for name in ("auto", "fp32")}
    report: dict[str, object] = {
        "onnxruntime": onnxruntime.__version__,
        "providers": {name: runner.provider for name, runner in runners.items()},
        "precisions": {name: runner.precision for name, runner in runners.items()},
        "cpu_has_native_bf16": cpu_has_native_bf16(),
    }
    diffs: dict[str, float] = {}
    agreement: dict[str, float] = {}
    for path in sorted((vesselnn / "denoised").glob("*.tif"))[:2]:
        volume = read_volume(path)
        crop = Volume(np.ascontiguousarray(volume.array[:160, :128]), volume.affine)
        expected = reference.probabilities(crop)
        predictors = {name: Predictor(runner, settings) for name, runner in runners.items()}
        for name, predictor in {**predictors, "torch-bf16": torch_bf16}.items():
            got = predictor.probabilities(crop)
            diff = float((got - expected).abs().max())
            same = float((class_mask(got) == class_mask(expected)).float().mean())
            diffs[name] = max(diffs.get(name, 0.0), diff)
            agreement[name] = min(agreement.get(name, 1.0), same)
    report["max_probability_diff"] = diffs
    report["min_mask_agreement"] = agreement
    report["static_sessions"] = len(runners["auto"]._static)
    from_file = Predictor.from_source(onnx, precision="auto")
    assert isinstance(from_file.runner, OnnxRunner)
    report["from_source_precision"] = from_file.runner.precision
    try:
        OnnxRunner.from_file(onnx, precision="fp16")
        report["fp16_error"] = None
    except ConfigError as exc:
        report["fp16_error"] = str(exc)
    return report


if __name__ == "__main__":
    checkpoint, onnx, vesselnn = map(Path, sys.argv[1:4])
    print(json.dumps(main(checkpoint, onnx, vesselnn)))
