"""Interchangeable runtimes behind :class:`~minivess.inference.Predictor`: torch or ONNX Runtime.

A runner turns one normalised volume into softmax probabilities with the model's sliding
window. Both runners blend windows with :func:`minivess.adapters.inference.blend_windows`, so
the same weights give the same mask whichever runs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, get_args

import numpy as np
import torch

from minivess.adapters import ModelAdapter
from minivess.adapters.inference import as_batch, blend_windows, fit_window, window_blending
from minivess.adapters.onnx import INPUT_NAME, OUTPUT_NAME
from minivess.config.model import InferenceConfig
from minivess.errors import ConfigError, first_line

if TYPE_CHECKING:
    from minivess.export.metadata import OnnxMetadata

Backend = Literal["torch", "onnx"]
"""Runtime of the network: eager/autocast torch, or ONNX Runtime on an exported graph."""
BACKENDS: tuple[str, ...] = get_args(Backend)


class Runner(Protocol):
    """Runs a network over whole volumes."""

    @property
    def backend(self) -> Backend:
        """Which runtime this is."""
        ...

    @property
    def adapter_name(self) -> str:
        """Registry name of the network's adapter."""
        ...

    def probabilities(
        self, image: np.ndarray | torch.Tensor, inference: InferenceConfig
    ) -> torch.Tensor:
        """Softmax probabilities of a normalised ``(C, H, W, D)`` image.

        Returns:
            float32 CPU ``(classes, H, W, D)``, with ``inference``'s sliding window.
        """
        ...


def check_backend(name: str) -> Backend:
    """``name`` if it is a known backend; a ConfigError listing the valid ones otherwise."""
    if name not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}; got {name!r}")
    return name  # type: ignore[return-value]


class TorchRunner:
    """The adapter's own :meth:`~minivess.adapters.ModelAdapter.predict_volume` (fp32 or bf16).

    Args:
        adapter: The trained network; moved to ``device``.
        device: Where it runs.
    """

    def __init__(self, adapter: ModelAdapter, device: torch.device) -> None:
        self.adapter = adapter
        adapter.network.to(device)

    @property
    def backend(self) -> Backend:
        """``"torch"``."""
        return "torch"

    @property
    def adapter_name(self) -> str:
        """The adapter's registry name."""
        return self.adapter.name

    def probabilities(
        self, image: np.ndarray | torch.Tensor, inference: InferenceConfig
    ) -> torch.Tensor:
        """Probabilities with the window and precision of ``inference``."""
        with window_blending(inference.blend):
            return self.adapter.predict_volume(
                image,
                roi_size=inference.roi_size,
                overlap=inference.overlap,
                sw_batch_size=inference.sw_batch_size,
                precision=inference.precision,
            )


class OnnxRunner:
    """An exported graph in an ONNX Runtime session, always float32.

    Args:
        graph: The serialised ONNX model.
        metadata: Its minivess metadata (see :func:`minivess.export.load_onnx`).
        device: ``cpu``, or ``cuda`` where onnxruntime-gpu is installed.
        threads: Intra-op threads; ``None`` uses torch's thread count (``OMP_NUM_THREADS``), so
            both backends share a machine the same way.

    Raises:
        ConfigError: No ONNX Runtime provider for ``device``.
        OnnxExportError: ONNX Runtime cannot build a session from the graph.
    """

    def __init__(
        self,
        graph: bytes,
        metadata: OnnxMetadata,
        *,
        device: torch.device | str = "cpu",
        threads: int | None = None,
        source: Path | None = None,
    ) -> None:
        import onnxruntime as ort

        from minivess.export.metadata import OnnxExportError

        self.metadata = metadata
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about unused initialisers are noise here
        try:
            self.session = ort.InferenceSession(
                graph, sess_options=options, providers=_providers(torch.device(device))
            )
        except Exception as exc:  # onnxruntime raises its own untyped Fail/InvalidGraph
            reason = first_line(exc)
            raise OnnxExportError(
                source, "onnx-session", f"ONNX Runtime cannot load this model: {reason}"
            ) from None

    @classmethod
    def from_file(
        cls, path: str | Path, *, device: torch.device | str = "cpu", threads: int | None = None
    ) -> OnnxRunner:
        """Load a file written by :func:`minivess.export.export_onnx`.

        Raises:
            OnnxExportError: Missing, corrupt or foreign file, or invalid metadata.
        """
        from minivess.export.onnx import load_onnx

        graph, metadata = load_onnx(path)
        return cls(
            graph.SerializeToString(), metadata, device=device, threads=threads, source=Path(path)
        )

    @property
    def backend(self) -> Backend:
        """``"onnx"``."""
        return "onnx"

    @property
    def adapter_name(self) -> str:
        """Registry name of the adapter the graph was exported from."""
        return self.metadata.adapter

    def probabilities(
        self, image: np.ndarray | torch.Tensor, inference: InferenceConfig
    ) -> torch.Tensor:
        """Probabilities with the window of ``inference`` (its precision is ignored: fp32).

        Raises:
            DataError: ``image`` is not ``(in_channels, H, W, D)``.
            ConfigError: The window breaks the size rule, or differs from the fixed size of a
                graph exported at one size.
        """
        meta = self.metadata
        volume = as_batch(image, int(meta.config.get("in_channels", 1)))
        if meta.input_size is not None:
            if tuple(inference.roi_size) != meta.input_size:
                raise ConfigError(
                    f"this {meta.adapter} ONNX graph only takes windows of {meta.input_size}, "
                    f"not {tuple(inference.roi_size)}; re-export it with that roi_size"
                )
            window = list(meta.input_size)  # MONAI pads smaller volumes up to it
        else:
            rule = meta.size_rule.rule()
            window = fit_window(meta.adapter, rule, inference.roi_size, tuple(volume.shape[2:]))

        def predictor(patch: torch.Tensor) -> torch.Tensor:
            feed = {INPUT_NAME: np.ascontiguousarray(patch.numpy(), dtype=np.float32)}
            return torch.from_numpy(self.session.run([OUTPUT_NAME], feed)[0])

        with torch.inference_mode(), window_blending(inference.blend):
            return blend_windows(
                volume,
                predictor,
                window=window,
                overlap=inference.overlap,
                sw_batch_size=inference.sw_batch_size,
            )


def _providers(device: torch.device) -> list[str]:
    """ONNX Runtime execution providers for ``device``."""
    import onnxruntime as ort

    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ConfigError(
        f"ONNX Runtime has no provider for device {device} here (available: "
        f"{', '.join(ort.get_available_providers())}); use device cpu or backend torch"
    )
