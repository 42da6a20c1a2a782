"""Interchangeable runtimes behind :class:`~minivess.inference.Predictor`: torch or ONNX Runtime.

A runner turns one normalised volume into softmax probabilities with the model's sliding
window. Both runners blend windows with :func:`minivess.adapters.inference.blend_windows`, so
the same weights give the same mask whichever runs them.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

import numpy as np
import torch

from minivess.adapters import ModelAdapter, get_adapter
from minivess.adapters.inference import (
    ResolvedPrecision,
    as_batch,
    blend_windows,
    cpu_has_native_bf16,
    fit_window,
    resolve_precision,
    window_blending,
)
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
    """An exported graph in ONNX Runtime sessions.

    The execution provider follows ``device`` and the installed ONNX Runtime build:

    * ``cpu`` with the stock ``onnxruntime``: the CPU provider, float32 (it has no bf16
      convolutions);
    * ``cpu`` with ``onnxruntime-openvino`` installed in place of ``onnxruntime``: the OpenVINO
      provider, in the precision ``precision`` resolves to (``"auto"``: bf16 on a CPU with
      native bf16, for adapters that run faster in bf16, as the torch path; else fp32), with
      one session compiled per window batch shape (static shapes run faster than the graph's
      dynamic ones);
    * ``cuda`` with ``onnxruntime-gpu``: the CUDA provider, float32.

    Args:
        graph: The serialised ONNX model.
        metadata: Its minivess metadata (see :func:`minivess.export.load_onnx`).
        device: ``cpu``, or ``cuda`` where onnxruntime-gpu is installed.
        threads: Intra-op threads; ``None`` uses torch's thread count (``OMP_NUM_THREADS``), so
            both backends share a machine the same way.
        source: Where the graph came from, for error messages.
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (the OpenVINO provider only).

    Raises:
        ConfigError: No ONNX Runtime provider for ``device``, or a precision the provider
            cannot run.
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
        precision: str = "auto",
    ) -> None:
        self.metadata = metadata
        self._graph, self._source = graph, source
        self._threads = threads or torch.get_num_threads()
        self.provider: OnnxProvider = _provider(torch.device(device))
        self.precision: ResolvedPrecision = _onnx_precision(
            self.provider, precision, metadata.adapter
        )
        self._static: dict[tuple[int, ...], Any] = {}
        self._lock = threading.Lock()
        # the graph's own dynamic-shape session: loads (and so checks) the graph at once
        self.session = self._new_session(None)

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        device: torch.device | str = "cpu",
        threads: int | None = None,
        precision: str = "auto",
    ) -> OnnxRunner:
        """Load a file written by :func:`minivess.export.export_onnx`.

        Raises:
            OnnxExportError: Missing, corrupt or foreign file, or invalid metadata.
            ConfigError: See the class.
        """
        from minivess.export.onnx import load_onnx

        graph, metadata = load_onnx(path)
        return cls(
            graph.SerializeToString(),
            metadata,
            device=device,
            threads=threads,
            source=Path(path),
            precision=precision,
        )

    @property
    def backend(self) -> Backend:
        """``"onnx"``."""
        return "onnx"

    @property
    def adapter_name(self) -> str:
        """Registry name of the adapter the graph was exported from."""
        return self.metadata.adapter

    def window_logits(self, patch: torch.Tensor) -> torch.Tensor:
        """float32 CPU logits of a batch of windows ``(B, C, *window)``."""
        feed = {INPUT_NAME: np.ascontiguousarray(patch.numpy(), dtype=np.float32)}
        session = self._session_for(tuple(int(n) for n in patch.shape))
        return torch.from_numpy(session.run([OUTPUT_NAME], feed)[0])

    def probabilities(
        self, image: np.ndarray | torch.Tensor, inference: InferenceConfig
    ) -> torch.Tensor:
        """Probabilities with the window of ``inference``, in :attr:`precision`.

        ``inference.precision`` describes the torch path and is not read here: the runner's
        precision is fixed when it is built.

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
        with torch.inference_mode(), window_blending(inference.blend):
            return blend_windows(
                volume,
                self.window_logits,
                window=window,
                overlap=inference.overlap,
                sw_batch_size=inference.sw_batch_size,
            )

    def _session_for(self, shape: tuple[int, ...]) -> Any:
        """The session for batches of ``shape``: one compiled per shape on OpenVINO."""
        if self.provider != "openvino":
            return self.session
        with self._lock:
            if shape not in self._static:
                self._static[shape] = self._new_session(shape)
            return self._static[shape]

    def _new_session(self, shape: tuple[int, ...] | None) -> Any:
        import onnxruntime as ort

        from minivess.export.metadata import OnnxExportError

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about unused initialisers are noise here
        providers: list[Any] = ["CPUExecutionProvider"]
        if self.provider == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        elif self.provider == "openvino":
            options_ov = _openvino_options(self.precision, self._threads, shape)
            providers.insert(0, (OPENVINO_PROVIDER, options_ov))
        try:
            return ort.InferenceSession(self._graph, sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped Fail/InvalidGraph
            reason = first_line(exc)
            raise OnnxExportError(
                self._source, "onnx-session", f"ONNX Runtime cannot load this model: {reason}"
            ) from None


OnnxProvider = Literal["cpu", "openvino", "cuda"]
"""The ONNX Runtime execution provider an :class:`OnnxRunner` runs on."""

OPENVINO_PROVIDER = "OpenVINOExecutionProvider"
"""Present in ``onnxruntime.get_available_providers()`` with ``onnxruntime-openvino``."""

OPENVINO_REQUIREMENT = "onnxruntime-openvino==1.24.1"
"""The OpenVINO build of ONNX Runtime that tests and benchmarks run (installed in place of
``onnxruntime``; ``uv run --with`` it to try it without changing the environment)."""


def _provider(device: torch.device) -> OnnxProvider:
    """The execution provider for ``device`` among those this ONNX Runtime build has."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.type == "cpu":
        return "openvino" if OPENVINO_PROVIDER in available else "cpu"
    if device.type == "cuda" and "CUDAExecutionProvider" in available:
        return "cuda"
    raise ConfigError(
        f"ONNX Runtime has no provider for device {device} here (available: "
        f"{', '.join(available)}); use device cpu or backend torch"
    )


def _onnx_precision(provider: OnnxProvider, precision: str, adapter: str) -> ResolvedPrecision:
    """What ``provider`` runs for the requested ``precision`` (float32 except on OpenVINO)."""
    if provider != "openvino":
        if precision in ("auto", "fp32"):
            return "fp32"
        raise ConfigError(
            f"ONNX Runtime's {provider} provider runs fp32 only, not {precision!r}; drop the "
            "precision, install onnxruntime-openvino (bf16 on CPUs that have it) or use "
            "backend torch"
        )
    try:
        bf16_on_cpu = get_adapter(adapter).bf16_on_cpu
    except ConfigError:  # a graph from an adapter this environment does not have
        bf16_on_cpu = False
    resolved = resolve_precision(precision, torch.device("cpu"), bf16_on_cpu=bf16_on_cpu)
    if resolved == "bf16" and not cpu_has_native_bf16():
        raise ConfigError("bf16 needs a CPU with native bf16 (AVX512-BF16 or AMX); use fp32")
    return resolved


def _openvino_options(
    precision: ResolvedPrecision, threads: int, shape: tuple[int, ...] | None
) -> dict[str, str]:
    """OpenVINO provider options: CPU, ``precision``, ``threads``, a static input ``shape``."""
    config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
    config["INFERENCE_NUM_THREADS"] = str(threads)
    options = {"device_type": "CPU", "load_config": json.dumps({"CPU": config})}
    if shape is not None:
        options["reshape_input"] = f"{INPUT_NAME}[{','.join(map(str, shape))}]"
    return options
