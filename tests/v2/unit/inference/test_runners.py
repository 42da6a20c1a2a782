"""Torch and ONNX Runtime backends: same logits, same masks, on real VesselNN volumes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch

from minivess.adapters import load_checkpoint
from minivess.data.io import read_volume
from minivess.data.transforms import normalise_intensity
from minivess.data.volume import Volume
from minivess.errors import ConfigError
from minivess.inference import PredictionSettings, Predictor
from minivess.inference.runners import OnnxRunner

if TYPE_CHECKING:
    from tests.v2.conftest import OnnxModel

WINDOW = (64, 64, 16)
LOGIT_ATOL = 1e-4
"""Bound on |torch - ORT| logits: float32 kernels differ in summation order only."""
MIN_AGREEMENT = 0.999


@pytest.fixture(scope="module")
def real_volumes(vesselnn_dir: Path) -> list[Volume]:
    """The six real VesselNN volumes as read for prediction (raw intensities, (H, W, D))."""
    return [read_volume(path) for path in sorted((vesselnn_dir / "denoised").glob("*.tif"))]


def centre_windows(volumes: list[Volume]) -> torch.Tensor:
    """One normalised ``WINDOW`` from the centre of each volume (Z reflected up to 16)."""
    windows = []
    for volume in volumes:
        image = normalise_intensity(volume.array[None], (1.0, 99.8)).numpy()
        h, w = image.shape[1:3]
        top, left = (h - WINDOW[0]) // 2, (w - WINDOW[1]) // 2
        crop = image[:, top : top + WINDOW[0], left : left + WINDOW[1], : WINDOW[2]]
        crop = np.pad(crop, ((0, 0), (0, 0), (0, 0), (0, WINDOW[2] - crop.shape[3])), "symmetric")
        windows.append(crop)
    return torch.from_numpy(np.stack(windows)).float()


def test_onnx_logits_match_torch_on_real_windows(
    onnx_model: OnnxModel, real_volumes: list[Volume]
) -> None:
    adapter, _ = load_checkpoint(onnx_model.checkpoint)
    batch = centre_windows(real_volumes)  # all six volumes in one run: a dynamic batch
    runner = OnnxRunner.from_file(onnx_model.onnx)
    (onnx_logits,) = runner.session.run(["logits"], {"image": batch.numpy()})
    with torch.no_grad():
        torch_logits = adapter.network.eval()(batch).numpy()
    diff = float(np.abs(onnx_logits - torch_logits).max())
    agreement = float((onnx_logits.argmax(1) == torch_logits.argmax(1)).mean())
    print(f"max |logit diff| {diff:.2e}, argmax agreement {agreement:.6f}")
    assert diff < LOGIT_ATOL
    assert agreement >= MIN_AGREEMENT


def test_both_backends_give_the_same_mask_on_real_volumes(
    onnx_model: OnnxModel, onnx_cache: Path, real_volumes: list[Volume]
) -> None:
    torch_predictor = Predictor.from_source(onnx_model.checkpoint, backend="torch")
    onnx_predictor = Predictor.from_source(onnx_model.checkpoint, backend="onnx")
    assert onnx_predictor.backend == "onnx"
    assert onnx_predictor.model.backend == "onnx"
    assert list(onnx_cache.iterdir()) == [onnx_model.onnx]  # reused, not exported again
    for volume in real_volumes[:2]:
        crop = Volume(np.ascontiguousarray(volume.array[:160, :128]), volume.affine)
        expected = torch_predictor.probabilities(crop)
        got = onnx_predictor.probabilities(crop)
        agreement = float((got.argmax(0) == expected.argmax(0)).float().mean())
        print(
            f"{crop.shape}: max |prob diff| {float((got - expected).abs().max()):.2e}, "
            f"mask agreement {agreement:.6f}"
        )
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
        assert agreement >= MIN_AGREEMENT


def test_an_onnx_file_predicts_alone(onnx_model: OnnxModel, real_volumes: list[Volume]) -> None:
    predictor = Predictor.from_source(onnx_model.onnx)
    crop = Volume(np.ascontiguousarray(real_volumes[0].array[:40, :36, :9]), np.eye(4))
    prediction = predictor.predict(crop)  # smaller than the window: padded and cropped back
    assert predictor.backend == "onnx"
    assert prediction.mask.shape == crop.shape
    assert prediction.model.adapter == "segresnet"
    assert prediction.model.source == str(onnx_model.onnx)
    assert predictor.settings == PredictionSettings.from_checkpoint(
        load_checkpoint(onnx_model.checkpoint)[1]
    ).with_precision("fp32")


def test_backend_choices_are_checked(onnx_model: OnnxModel, onnx_cache: Path) -> None:
    with pytest.raises(ConfigError, match="backend must be one of torch, onnx; got 'tensorrt'"):
        Predictor.from_source(onnx_model.checkpoint, backend="tensorrt")
    with pytest.raises(ConfigError, match="only the onnx backend runs"):
        Predictor.from_source(onnx_model.onnx, backend="torch")
    with pytest.raises(ConfigError, match="runs fp32 or bf16, not 'fp16'"):
        Predictor.from_source(onnx_model.checkpoint, backend="onnx", precision="fp16")
    if OnnxRunner.from_file(onnx_model.onnx).provider == "cpu":  # stock onnxruntime
        with pytest.raises(ConfigError, match="cpu provider runs fp32 only, not 'bf16'"):
            Predictor.from_source(onnx_model.checkpoint, backend="onnx", precision="bf16")
    with pytest.raises(ConfigError, match="has no torch adapter"):
        _ = Predictor.from_source(onnx_model.onnx).adapter
    adapter, info = load_checkpoint(onnx_model.checkpoint)
    settings = PredictionSettings.from_checkpoint(info)
    runner = OnnxRunner.from_file(onnx_model.onnx)
    with pytest.raises(ConfigError, match="backend 'torch' asked for, but the runner"):
        Predictor(runner, settings, backend="torch")
    assert Predictor(adapter, settings, backend="onnx").backend == "onnx"
