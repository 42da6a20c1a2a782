"""Trace an adapter's network into an ONNX graph ``image -> logits`` (no metadata, no caching).

:mod:`minivess.export.onnx` wraps this with the model's metadata, atomic writing and caching;
adapters call :func:`export_network` from :meth:`ModelAdapter.export_onnx`, choosing which axes
stay dynamic.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from minivess.errors import MinivessError, first_line

INPUT_NAME = "image"
"""Name of the graph input: float32 ``(B, C, H, W, D)`` normalised intensities."""
OUTPUT_NAME = "logits"
"""Name of the graph output: float32 ``(B, classes, H, W, D)``."""
OPSET = 20

_EXAMPLE_BATCH = 2  # a batch of 1 would be specialised to a constant by torch.export


class ExportError(MinivessError):
    """The network could not be converted to ONNX."""


def export_network(
    network: nn.Module,
    path: Path,
    *,
    in_channels: int,
    example_size: Sequence[int],
    dynamic_spatial: bool,
) -> None:
    """Write ``network`` (eval mode, CPU, float32) as a single-file ONNX graph at ``path``.

    Uses the ``torch.export``-based exporter (the one torch supports); the batch axis is always
    dynamic.

    Args:
        network: Maps ``(B, in_channels, H, W, D)`` to logits.
        path: Destination (overwritten; not atomic, see :func:`minivess.export.export_onnx`).
        in_channels: Channels of the input.
        example_size: Spatial size (H, W, D) traced; the graph's fixed size when
            ``dynamic_spatial`` is false. Must satisfy the adapter's size rule.
        dynamic_spatial: Keep H, W and D symbolic (fully convolutional networks), or freeze
            them to ``example_size`` (networks whose graph depends on the shape).

    Raises:
        ExportError: The exporter failed; the message carries its first line.
    """
    example = torch.zeros(_EXAMPLE_BATCH, in_channels, *(int(s) for s in example_size))
    axes = {0: torch.export.Dim.DYNAMIC}
    if dynamic_spatial:
        axes.update({axis: torch.export.Dim.DYNAMIC for axis in (2, 3, 4)})
    with _exportable(network) as module, _quiet_exporter():
        try:
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                external_data=False,
                dynamic_shapes=(axes,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=OPSET,
                verbose=False,
            )
        except Exception as exc:  # the exporter raises many unrelated types
            reason = first_line(exc)
            raise ExportError(f"ONNX export of {type(network).__name__} failed: {reason}") from None
    if program is None:  # pragma: no cover - dynamo=True always returns a program
        raise ExportError("the ONNX exporter returned no program")
    program.save(str(path), external_data=False)


@contextmanager
def _exportable(network: nn.Module) -> Iterator[nn.Module]:
    """The network in eval mode on the CPU in float32 for tracing; its state restored after."""
    param = next(network.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = network.training
    network.eval().to("cpu")
    try:
        with torch.no_grad():
            yield network
    finally:
        network.train(was_training).to(device)


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress lines and its warnings about unrelated operator sets."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
