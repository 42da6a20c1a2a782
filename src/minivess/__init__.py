"""minivess: model-agnostic MLOps for 3D vessel segmentation of two-photon microscopy volumes."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("minivess")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
