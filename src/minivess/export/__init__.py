"""Export trained models for other runtimes: one self-describing ONNX file per model.

Example:
    >>> from minivess.export import export_source  # doctest: +SKIP
    >>> export_source("runs/exp/checkpoints/best.pt", "model.onnx")  # doctest: +SKIP
"""

from minivess.export.metadata import OnnxExportError, OnnxMetadata
from minivess.export.onnx import cached_export, default_cache_dir, export_onnx, load_onnx

__all__ = [
    "OnnxExportError",
    "OnnxMetadata",
    "cached_export",
    "default_cache_dir",
    "export_onnx",
    "load_onnx",
]
