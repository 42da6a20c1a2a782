"""ONNX export: the file carries its metadata, keeps its axes dynamic, is cached, fails clearly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from minivess.adapters import build_adapter, load_checkpoint
from minivess.adapters.onnx import ExportError
from minivess.adapters.segresnet import SegResNetAdapter
from minivess.errors import ConfigError
from minivess.export import OnnxExportError, cached_export, export_onnx, load_onnx
from minivess.export.onnx import export_key
from minivess.inference import OnnxRunner, PredictionSettings, Predictor

if TYPE_CHECKING:
    from tests.v2.conftest import OnnxModel


@pytest.fixture
def extra(onnx_model: OnnxModel) -> dict[str, Any]:
    """The prediction settings training stores in a checkpoint, as plain values."""
    return load_checkpoint(onnx_model.checkpoint)[1].extra


@pytest.fixture
def tiny_config(onnx_model: OnnxModel) -> dict[str, Any]:
    """The tiny SegResNet's hyper-parameters."""
    return load_checkpoint(onnx_model.checkpoint)[1].config


def with_roi(extra: dict[str, Any], roi: list[int]) -> PredictionSettings:
    """``extra``'s settings with another sliding-window ROI."""
    return PredictionSettings.from_extra(
        {**extra, "inference": {**extra["inference"], "roi_size": roi}}
    )


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def rewrite_props(source: Path, target: Path, **changes: str | None) -> Path:
    """A copy of ``source`` with ``minivess.<key>`` properties changed (``None`` drops one)."""
    graph = onnx.load(str(source))
    props = {p.key: p.value for p in graph.metadata_props}
    for key, value in changes.items():
        if value is None:
            props.pop(f"minivess.{key}", None)
        else:
            props[f"minivess.{key}"] = value
    del graph.metadata_props[:]
    onnx.helper.set_model_props(graph, props)
    onnx.save(graph, str(target))
    return target


def test_metadata_round_trips_everything_prediction_needs(
    onnx_model: OnnxModel, extra: dict[str, Any]
) -> None:
    _, info = load_checkpoint(onnx_model.checkpoint)
    graph, meta = load_onnx(onnx_model.onnx)
    assert meta.adapter == "segresnet"
    assert meta.config == info.config
    assert meta.size_rule.rule().divisor == (4, 4, 4)
    assert meta.input_size is None
    assert meta.preprocessing.percentiles == (1.0, 99.8)
    window = extra["inference"]
    assert meta.inference.roi_size == tuple(window["roi_size"])
    assert meta.inference.overlap == window["overlap"]
    assert meta.settings.inference.precision == "fp32"
    assert meta.code_version == info.code_version
    assert meta.created_at == info.created_at
    assert meta.training_run_id is None
    props = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(props["minivess.config"]) == info.config  # readable by any ONNX tool
    assert graph.producer_name == "minivess"


def test_exports_keep_their_blending_and_old_ones_read_as_gaussian(
    onnx_model: OnnxModel, tmp_path: Path
) -> None:
    graph, meta = load_onnx(onnx_model.onnx)
    props = {p.key: p.value for p in graph.metadata_props}
    stored = json.loads(props["minivess.inference"])
    assert stored["blend"] == meta.inference.blend
    for blend in ("constant", "gaussian"):
        changed = json.dumps({**stored, "blend": blend})
        path = rewrite_props(onnx_model.onnx, tmp_path / f"{blend}.onnx", inference=changed)
        assert load_onnx(path)[1].inference.blend == blend
    old = json.dumps({k: v for k, v in stored.items() if k != "blend"})
    path = rewrite_props(onnx_model.onnx, tmp_path / "old.onnx", inference=old)
    assert load_onnx(path)[1].inference.blend == "gaussian"


def test_batch_and_spatial_axes_are_dynamic(onnx_model: OnnxModel) -> None:
    adapter, _ = load_checkpoint(onnx_model.checkpoint)
    x = torch.rand(3, 1, 32, 48, 8)
    (logits,) = session(onnx_model.onnx).run(["logits"], {"image": x.numpy()})
    with torch.no_grad():
        expected = adapter.network.eval()(x).numpy()
    assert logits.shape == (3, 2, 32, 48, 8)
    np.testing.assert_allclose(logits, expected, atol=1e-4)


def test_cache_reuses_an_export_and_keys_on_the_weights(onnx_model: OnnxModel) -> None:
    adapter, info = load_checkpoint(onnx_model.checkpoint)
    settings = PredictionSettings.from_checkpoint(info)
    before = onnx_model.onnx.stat().st_mtime_ns
    again = cached_export(adapter, settings, info, cache_dir=onnx_model.cache_dir)
    assert again == onnx_model.onnx
    assert again.stat().st_mtime_ns == before
    _, meta = load_onnx(again)
    key = export_key(adapter, meta)
    with torch.no_grad():
        next(adapter.network.parameters()).add_(1.0)
    assert export_key(adapter, meta) != key


def test_window_that_breaks_the_size_rule_is_refused_before_writing(
    tmp_path: Path, tiny_config: dict[str, Any], extra: dict[str, Any]
) -> None:
    adapter = build_adapter("segresnet", tiny_config)
    settings = with_roi(extra, [30, 32, 8])
    with pytest.raises(ConfigError, match=r"roi_size \(30, 32, 8\).*try \(32, 32, 8\)"):
        export_onnx(adapter, tmp_path / "m.onnx", settings=settings)
    assert not list(tmp_path.iterdir())


class _BrokenExport(SegResNetAdapter):
    """An adapter whose exporter writes half a file, then fails (as a crash mid-export would)."""

    def export_onnx(self, path: str | Path, *, example_size: Any) -> None:
        Path(path).write_bytes(b"half a graph")
        raise ExportError("ONNX export of SegResNet failed: unsupported operator")


def test_failed_export_leaves_the_previous_file(
    tmp_path: Path, tiny_config: dict[str, Any], extra: dict[str, Any]
) -> None:
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous export")
    adapter = _BrokenExport.from_config(tiny_config)
    settings = PredictionSettings.from_extra(extra)
    with pytest.raises(ExportError, match="unsupported operator"):
        export_onnx(adapter, target, settings=settings)
    assert target.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_missing_truncated_and_foreign_files_are_named(
    onnx_model: OnnxModel, tmp_path: Path
) -> None:
    with pytest.raises(OnnxExportError, match=r"\[missing\]"):
        load_onnx(tmp_path / "none.onnx")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(onnx_model.onnx.read_bytes()[:5000])
    with pytest.raises(
        OnnxExportError, match=r"truncated.onnx: \[unreadable\] not a readable ONNX"
    ):
        load_onnx(truncated)
    foreign = rewrite_props(onnx_model.onnx, tmp_path / "foreign.onnx", format=None)
    with pytest.raises(
        OnnxExportError, match=r"\[onnx-metadata\].*export it with `minivess export`"
    ):
        load_onnx(foreign)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"config": "{not json"}, r"minivess.config is not valid JSON"),
        ({"format_version": "99"}, r"format_version: Input should be less than or equal to 1"),
        ({"inference": '{"roi_size": [64, 64]}'}, r"inference.roi_size"),
        ({"adapter": None}, r"adapter: Field required"),
        ({"config": '{"in_channels": 3}'}, r"\[onnx-signature\].*expected image \[None, 3,"),
    ],
)
def test_wrong_metadata_is_refused_with_the_field(
    onnx_model: OnnxModel, tmp_path: Path, changes: dict[str, str | None], message: str
) -> None:
    bad = rewrite_props(onnx_model.onnx, tmp_path / "bad.onnx", **changes)
    with pytest.raises(OnnxExportError, match=message):
        load_onnx(bad)
    with pytest.raises(OnnxExportError, match=message):
        Predictor.from_source(bad)


@pytest.mark.slow
def test_swinunetr_exports_at_its_window_only(tmp_path: Path, extra: dict[str, Any]) -> None:
    torch.manual_seed(0)
    adapter = build_adapter("swinunetr", {"feature_size": 12, "use_checkpoint": False})
    settings = with_roi(extra, [64, 64, 32])
    meta = export_onnx(adapter, tmp_path / "swin.onnx", settings=settings)
    assert meta.input_size == (64, 64, 32)
    graph, _ = load_onnx(tmp_path / "swin.onnx")
    dims = [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [1, 64, 64, 32]
    x = torch.rand(2, 1, 64, 64, 32)
    (logits,) = session(tmp_path / "swin.onnx").run(["logits"], {"image": x.numpy()})
    with torch.no_grad():
        expected = adapter.network.eval()(x).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-3)
    runner = OnnxRunner.from_file(tmp_path / "swin.onnx")
    probs = runner.probabilities(torch.rand(1, 40, 72, 20), settings.inference)
    assert probs.shape == (2, 40, 72, 20)  # padded up to the fixed window, cropped back
    with pytest.raises(ConfigError, match=r"only takes windows of \(64, 64, 32\)"):
        runner.probabilities(torch.rand(1, 64, 64, 32), with_roi(extra, [96, 96, 32]).inference)
