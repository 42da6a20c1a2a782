"""Sliding-window prediction of whole volumes, with the fastest numerically safe precision.

On CPUs with native bf16 (AVX512-BF16 or AMX), bf16 autocast plus the ``channels_last_3d``
memory format ran SegResNet sliding-window inference ~3x faster than eager fp32 with 0.9999
argmax agreement, but made SwinUNETR ~1.6x slower (many small matmuls and layer norms). So
``"auto"`` picks CPU bf16 only for adapters that declare ``bf16_on_cpu = True``; elsewhere eager
fp32 stays the CPU default. On CUDA, autocast uses bf16 where the GPU supports it natively and
fp16 otherwise. Adapters that declare ``cpu_window_threads = True`` run their CPU windows side
by side, one core each (:mod:`minivess.adapters.window_threads`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast, get_args

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from minivess.adapters.layers import as_channels_last
from minivess.adapters.window_threads import cpu_window_workers, map_windows
from minivess.errors import ConfigError, DataError

if TYPE_CHECKING:
    from minivess.adapters.base import ModelAdapter, SizeRule

Precision = Literal["auto", "fp32", "bf16", "fp16"]
"""Requested inference precision; ``"auto"`` picks per device (see :func:`resolve_precision`)."""

ResolvedPrecision = Literal["fp32", "bf16", "fp16"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

WindowProgress = Callable[[int, int], None]
"""Called as ``progress(windows_done, windows_total)`` while a volume is predicted."""
_WINDOW_PROGRESS: ContextVar[WindowProgress | None] = ContextVar("window_progress", default=None)


@contextmanager
def window_progress(progress: WindowProgress | None) -> Iterator[None]:
    """Report every sliding window run in this thread inside the block to ``progress``.

    :func:`blend_windows` calls ``progress(0, total)`` before the first window, then
    ``progress(done, total)`` after each batch of windows, for each volume it predicts (an
    ensemble runs one pass per member, each counting from 0). ``None`` reports nothing.

    Example:
        >>> with window_progress(lambda done, total: print(done, total)):  # doctest: +SKIP
        ...     adapter.predict_volume(image, roi_size=(64, 64, 16))
    """
    token = _WINDOW_PROGRESS.set(progress)
    try:
        yield
    finally:
        _WINDOW_PROGRESS.reset(token)


GAUSSIAN_SIGMA_SCALE = 0.125
"""Sigma of ``gaussian`` blending as a fraction of the window (MONAI's default)."""

Blend = Literal["constant", "gaussian"]
"""How overlapping windows are averaged: ``constant`` (equal weights, MONAI's default) or
``gaussian`` (weights falling towards each window's edge, sigma 0.125 of the window)."""
_BLEND: ContextVar[Blend] = ContextVar("window_blend", default="constant")


@contextmanager
def window_blending(blend: Blend) -> Iterator[None]:
    """Blend the sliding windows run in this thread inside the block with ``blend``.

    :class:`~minivess.inference.runners.TorchRunner` and the ONNX runner set it from the
    model's ``inference.blend``; outside any block windows are blended with ``constant``
    weights. It reaches every adapter whose ``predict_volume`` goes through
    :func:`sliding_window_predict` without changing the adapter protocol.

    Example:
        >>> with window_blending("gaussian"):  # doctest: +SKIP
        ...     adapter.predict_volume(image, roi_size=(64, 64, 16))
    """
    if blend not in get_args(Blend):
        raise ConfigError(f"unknown blend {blend!r}: use one of {', '.join(get_args(Blend))}")
    token = _BLEND.set(blend)
    try:
        yield
    finally:
        _BLEND.reset(token)


def count_windows(
    spatial: Sequence[int], window: Sequence[int], overlap: float | Sequence[float]
) -> int:
    """Windows MONAI's ``sliding_window_inference`` cuts a volume of shape ``spatial`` into.

    Example:
        >>> count_windows((160, 160, 20), (64, 64, 16), 0.25)
        18
    """
    overlaps = [float(overlap)] * len(spatial) if isinstance(overlap, int | float) else overlap
    total = 1
    for size, roi, share in zip(spatial, window, overlaps, strict=True):
        padded = max(int(size), int(roi))  # a smaller volume is padded up to the window
        if padded == roi:
            continue
        step = max(int(roi * (1 - share)), 1)
        total *= math.ceil((padded - roi) / step) + 1
    return total


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX-BF16)."""
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is not None:
        caps = get_capabilities()
        return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    try:  # torch releases before get_capabilities(): read the Linux CPU flags
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(
    precision: str, device: torch.device, *, bf16_on_cpu: bool
) -> ResolvedPrecision:
    """The concrete precision to run with on ``device``.

    Args:
        precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"auto"``. ``"auto"`` means bf16 on a
            CPU with native bf16 when ``bf16_on_cpu`` (else fp32), bf16 on a CUDA GPU that
            supports it (else fp16), and fp32 on any other device.
        device: Where the network runs.
        bf16_on_cpu: Whether the model is known to run faster under CPU bf16 autocast
            (``adapter.bf16_on_cpu``).

    Returns:
        ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    Raises:
        ConfigError: Unknown precision, or fp16 requested off CUDA.
    """
    valid = get_args(Precision)
    if precision not in valid:
        raise ConfigError(f"precision must be one of {', '.join(valid)}; got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"precision 'fp16' needs a CUDA device, got {device}; use bf16 or fp32")
    if precision != "auto":
        return cast(ResolvedPrecision, precision)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    if device.type == "cpu" and bf16_on_cpu and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def sliding_window_predict(
    adapter: ModelAdapter,
    image: np.ndarray | torch.Tensor,
    *,
    roi_size: Sequence[int],
    overlap: float | Sequence[float],
    sw_batch_size: int,
    precision: str,
) -> torch.Tensor:
    """Softmax probabilities ``(C, H, W, D)`` for ``image``; see ``ModelAdapter.predict_volume``."""
    volume = as_batch(image, adapter.in_channels)
    window = fit_window(adapter.name, adapter.size_rule, roi_size, tuple(volume.shape[2:]))
    device = _device_of(adapter.network)
    with window_logits(adapter, precision) as (logits_of, workers), torch.inference_mode():
        return blend_windows(
            volume,
            logits_of,
            window=window,
            overlap=overlap,
            sw_batch_size=sw_batch_size * workers,  # sw_batch_size windows per worker
            sw_device=device,
        )


@contextmanager
def window_logits(
    adapter: ModelAdapter, precision: str
) -> Iterator[tuple[Callable[[torch.Tensor], torch.Tensor], int]]:
    """How a batch of windows becomes float32 logits, the same for every torch caller.

    Inside the block the network is in eval mode, in the precision ``precision`` resolves to
    on the network's device; with CPU bf16, its weights and each window are
    ``channels_last_3d``; with ``adapter.cpu_window_threads`` on CPU, a batch is split over
    the window workers (:func:`~minivess.adapters.window_threads.map_windows`). Afterwards the
    network's mode and weight layout are restored.

    Yields:
        ``(logits_of, workers)``: ``logits_of`` maps windows ``(B, C, *window)`` (moved to
        the network's device) to float32 logits there; a batch of ``workers`` times the
        wanted windows per forward pass keeps every worker busy.
    """
    network = adapter.network
    device = _device_of(network)
    resolved = resolve_precision(precision, device, bf16_on_cpu=adapter.bf16_on_cpu)
    channels_last = resolved == "bf16" and device.type == "cpu"
    workers = cpu_window_workers(device, adapter.cpu_window_threads)

    def forward(patch: torch.Tensor) -> torch.Tensor:
        # autocast and inference_mode are per thread: entered here, where the window runs
        with torch.inference_mode(), _autocast(device, resolved):
            patch = patch.to(device)
            if channels_last:
                patch = as_channels_last(patch)
            return adapter.forward(patch).float()  # blend and softmax in float32

    def logits_of(batch: torch.Tensor) -> torch.Tensor:
        return map_windows(forward, batch, workers)  # on this thread when workers == 1

    with _eval_mode(network), _channels_last_3d(network, channels_last):
        yield logits_of, workers


def _autocast(device: torch.device, resolved: str) -> AbstractContextManager[object]:
    """A fresh autocast context for ``resolved`` (none for fp32); one per use, per thread."""
    if resolved in _DTYPES:
        return torch.autocast(device.type, dtype=_DTYPES[resolved])
    return nullcontext()


def blend_windows(
    volume: torch.Tensor,
    predictor: Callable[[torch.Tensor], torch.Tensor],
    *,
    window: Sequence[int],
    overlap: float | Sequence[float],
    sw_batch_size: int,
    sw_device: torch.device | None = None,
) -> torch.Tensor:
    """Softmax probabilities ``(C, H, W, D)`` of ``volume`` from the blended logits of windows.

    The one sliding window every runtime shares (torch eager or autocast, ONNX Runtime), so
    they all produce the same mask from the same logits. Overlaps are averaged as
    :func:`window_blending` says (``constant`` by default).

    Args:
        volume: float32 CPU batch ``(1, C, H, W, D)`` (see :func:`as_batch`).
        predictor: Maps a batch of windows ``(B, C, *window)`` to float32 logits.
        window: Window (H, W, D) (see :func:`fit_window`); a smaller volume is padded.
        overlap: Fraction of each window shared with its neighbour.
        sw_batch_size: Windows per ``predictor`` call.
        sw_device: Where windows are sent before ``predictor`` (``None``: stay on the CPU).

    Returns:
        float32 CPU tensor ``(classes, H, W, D)``.
    """
    progress = _WINDOW_PROGRESS.get()
    if progress is not None:
        predictor = _counted(predictor, progress, count_windows(volume.shape[2:], window, overlap))
    logits = sliding_window_inference(
        volume,
        roi_size=list(window),
        sw_batch_size=sw_batch_size,
        predictor=predictor,
        overlap=overlap,
        mode=_BLEND.get(),
        sigma_scale=GAUSSIAN_SIGMA_SCALE,
        sw_device=sw_device,
        device=torch.device("cpu"),
    )
    return torch.softmax(cast(torch.Tensor, logits).float(), dim=1)[0]


def class_mask(probs: torch.Tensor) -> torch.Tensor:
    """The most probable class of every voxel of ``probs`` ``(C, ...)``, as ``uint8``.

    Equal to ``probs.argmax(0)`` (the lowest class wins a tie) for NaN-free maps, but one pass
    per class: torch's CPU argmax over a leading axis walks it voxel by voxel and took 1.55 s
    for a 2x512x512x25 map on 2 cores, this 0.08 s.

    Example:
        >>> class_mask(torch.tensor([[0.6, 0.5, 0.2], [0.4, 0.5, 0.8]])).tolist()
        [0, 0, 1]
    """
    if not 1 <= probs.shape[0] <= 256:
        raise ValueError(f"class_mask needs 1 to 256 classes on axis 0, got {probs.shape[0]}")
    best = probs[0].clone()
    mask = torch.zeros(best.shape, dtype=torch.uint8, device=probs.device)
    for index in range(1, probs.shape[0]):
        mask.masked_fill_(probs[index] > best, index)
        torch.maximum(best, probs[index], out=best)
    return mask


def _counted(
    predictor: Callable[[torch.Tensor], torch.Tensor], progress: WindowProgress, total: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``predictor`` reporting the windows done after each batch of them."""
    done = 0
    progress(0, total)

    def counting(patch: torch.Tensor) -> torch.Tensor:
        nonlocal done
        logits = predictor(patch)
        done += int(patch.shape[0])
        progress(done, total)
        return logits

    return counting


def as_batch(image: np.ndarray | torch.Tensor, in_channels: int) -> torch.Tensor:
    """``image`` as a float32 CPU tensor ``(1, C, H, W, D)``; a DataError for a wrong shape."""
    shape = tuple(image.shape)
    if len(shape) != 4 or shape[0] != in_channels or min(shape) < 1:
        raise DataError(
            None,
            "image-shape",
            f"expected an image of shape (C={in_channels}, H, W, D), got {shape}; add a channel "
            "axis with image[None] for a single-channel (H, W, D) volume",
        )
    tensor = torch.as_tensor(image).detach().as_subclass(torch.Tensor)
    return tensor.to(device="cpu", dtype=torch.float32)[None]


def fit_window(
    name: str, rule: SizeRule, roi_size: Sequence[int], spatial: tuple[int, ...]
) -> list[int]:
    """``roi_size`` checked against the size rule, shrunk on axes where the volume is smaller.

    Args:
        name: The adapter's name, for the message.
        rule: Its size rule.
        roi_size: The requested window (H, W, D).
        spatial: The volume's spatial shape.

    Raises:
        ConfigError: ``roi_size`` breaks the rule; the message gives the nearest valid size.
    """
    roi = tuple(int(r) for r in roi_size)
    if len(roi) != 3 or not rule.valid(roi):
        nearest = rule.pad_to_valid(roi) if len(roi) == 3 else "three sizes (H, W, D)"
        raise ConfigError(
            f"roi_size {roi} does not fit {name}: each axis must be a multiple of "
            f"{rule.divisor} and at least {rule.minimum}; try {nearest}"
        )
    cover = rule.pad_to_valid(spatial)
    return [min(r, c) for r, c in zip(roi, cover, strict=True)]


def _device_of(network: nn.Module) -> torch.device:
    param = next(network.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@contextmanager
def _eval_mode(network: nn.Module) -> Iterator[None]:
    """Run in eval mode (no dropout, frozen norm statistics), then restore the previous mode."""
    was_training = network.training
    network.eval()
    try:
        yield
    finally:
        network.train(was_training)


@contextmanager
def _channels_last_3d(network: nn.Module, enabled: bool) -> Iterator[None]:
    """Lay out 5-D weights as ``channels_last_3d`` (oneDNN's fast path), then restore them.

    Only the storage layout changes; parameters keep their identity, so an optimizer holding
    them is unaffected. Done outside ``inference_mode`` so the weights stay trainable tensors.
    """
    params = [p for p in network.parameters() if p.dim() == 5] if enabled else []
    with torch.no_grad():
        for p in params:
            p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
    try:
        yield
    finally:
        with torch.no_grad():
            for p in params:
                p.data = p.data.contiguous()
