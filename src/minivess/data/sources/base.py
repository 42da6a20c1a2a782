"""What every dataset source provides: discovery of cases in a folder and loading of one case."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from minivess.data.volume import Volume


@dataclass(frozen=True)
class Case:
    """One image (and, for training data, its label) found by a source.

    Args:
        case_id: Identifier unique within the dataset (file stem without suffixes).
        source: Name of the source that found it (``"vesselnn"``, ``"minivess"``, ...).
        image: Location of the image: a file path, or ``archive.zip!member`` inside a zip.
        label: Location of the label, or ``None`` for unlabelled data.
        spacing: Voxel size in micrometres (H, W, D) from side-car metadata, if the source knows
            it better than the image file does; ``None`` to trust the image file.
        meta: Extra facts worth keeping in the manifest (e.g. ``spacing_source``).
    """

    case_id: str
    source: str
    image: str
    label: str | None
    spacing: tuple[float, float, float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class DatasetSource(ABC):
    """A layout of files on disk that can be turned into cases.

    Subclasses set ``name`` and implement :meth:`detect`, :meth:`discover` and (if files are not
    plain paths readable by :func:`minivess.data.io.read_volume`) :meth:`load`.
    """

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def detect(cls, root: Path) -> bool:
        """Whether ``root`` looks like this source's layout (cheap: names only, no decoding)."""

    @abstractmethod
    def discover(self, root: Path) -> list[Case]:
        """Every case under ``root``, sorted by id; a ``DataError`` if the layout is broken."""

    @abstractmethod
    def load(self, case: Case) -> tuple[Volume, Volume | None]:
        """Read the image and label of ``case`` with its spacing applied."""
