"""Dataset sources: each knows one on-disk layout and turns it into :class:`Case` objects.

Built-in sources are declared as entry points of the ``minivess.sources`` group in
``pyproject.toml``, exactly as a third-party package would add one.
"""

from __future__ import annotations

from pathlib import Path

from minivess.data.sources.base import Case, DatasetSource
from minivess.errors import DataError
from minivess.registry import Registry

SOURCES: Registry[type[DatasetSource]] = Registry("minivess.sources", "dataset source")


def get_source(name: str) -> DatasetSource:
    """An instance of the source registered as ``name`` (error lists the valid names)."""
    return SOURCES.get(name)()


def detect_source(root: str | Path) -> DatasetSource:
    """The source whose layout ``root`` has; a :class:`DataError` naming the layouts otherwise."""
    root = Path(root)
    if not root.exists():
        raise DataError(root, "missing-folder", "dataset folder does not exist")
    for name in SOURCES.names():
        cls = SOURCES.get(name)
        if cls.detect(root):
            return cls()
    raise DataError(
        root,
        "unknown-layout",
        "no known dataset layout found; expected one of: "
        "VesselNN (denoised/, labels/, metadata/), MiniVess EBRAINS (raw/, seg/, json/ or the "
        "downloaded .zip), Decathlon (imagesTr/, labelsTr/). Pass --source to force one of: "
        + ", ".join(SOURCES.names()),
    )


__all__ = ["SOURCES", "Case", "DatasetSource", "detect_source", "get_source"]
