"""The VesselNN layout: BM4D-denoised two-photon stacks, dense labels and OME-XML side-cars.

Upstream (``petteriTeikari/vesselNN_dataset``) keeps one folder per kind of file::

    denoised/NAME_BM4D_denoised.tif      (Z, Y, X) uint8 stack
    labels/NAME_<anything>.tif           same shape; vessel = non-zero
    metadata/NAME_metadata.xml.txt       OME-XML with PhysicalSizeX/Y/Z in micrometres

Label names follow no single pattern (``_labels_v1``, ``_manualLabels_v2``, ``_labelsMarc``), so a
label belongs to the image whose NAME it starts with, followed by ``_``; when two image NAMEs
match (``A`` and ``A_B``), the longer one wins.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np

from minivess.data.io import TIFF_SUFFIXES, parse_ome_spacing, read_tiff
from minivess.data.sources.base import Case, DatasetSource
from minivess.data.volume import Volume
from minivess.errors import DataError

IMAGE_SUFFIX = "_BM4D_denoised.tif"
METADATA_SUFFIX = "_metadata.xml.txt"

Spacing = tuple[float, float, float]

#: Voxel sizes (X, Y, Z) in micrometres for upstream stacks published without a metadata file.
#: Upstream's notes say both santos2015 low-contrast stacks were acquired with the settings of
#: ``santos2015_tumor``, whose OME-XML gives 0.621 x 0.621 x 5.0 um.
KNOWN_SPACING: dict[str, Spacing] = {
    "santos2015_lowContrastVessels": (0.621, 0.621, 5.0),
    "santos2015_mixedSizelowContrastVessels": (0.621, 0.621, 5.0),
}

#: Voxel size for any other stack without metadata: the most common value among the upstream
#: OME-XML files (Burgess and Poon acquisitions at 512 x 512).
DEFAULT_SPACING: Spacing = (0.994, 0.994, 5.0)


class MissingMetadataWarning(UserWarning):
    """A VesselNN stack has no OME-XML side-car, so its voxel size is a documented default."""


class VesselNNSource(DatasetSource):
    """Cases from a VesselNN folder (the upstream layout, or what ``download_vesselnn`` wrote).

    Each case's spacing comes from its OME-XML side-car (``meta["spacing_source"] ==
    "metadata"``). Without one, it comes from :data:`KNOWN_SPACING` (``"known-default"``) or
    :data:`DEFAULT_SPACING` (``"default"``), with a :class:`MissingMetadataWarning`.

    Example:
        >>> source = VesselNNSource()
        >>> cases = source.discover(root)  # doctest: +SKIP
        >>> image, label = source.load(cases[0])  # doctest: +SKIP
    """

    name: ClassVar[str] = "vesselnn"

    @classmethod
    def detect(cls, root: Path) -> bool:
        """Whether ``root`` has the ``denoised/`` and ``labels/`` folders of the VesselNN layout."""
        root = Path(root)
        return (root / "denoised").is_dir() and (root / "labels").is_dir()

    def discover(self, root: Path) -> list[Case]:
        """Every image under ``root/denoised`` with its label and voxel size, sorted by NAME.

        Args:
            root: Folder holding ``denoised/``, ``labels/`` and (optionally) ``metadata/``.

        Returns:
            One case per image; ``case_id`` is the upstream NAME.

        Raises:
            DataError: No images (``no-cases``), an image with no label (``missing-label``) or
                several (``ambiguous-label``), or a metadata file without a usable voxel size
                (``metadata``).
        """
        root = Path(root)
        images = _find_images(root)
        labels = _assign_labels(root / "labels", list(images))
        cases = []
        for case_id, image in sorted(images.items()):
            label = _single_label(case_id, image, labels[case_id])
            spacing, origin = _spacing_for(root / "metadata", case_id)
            cases.append(
                Case(
                    case_id=case_id,
                    source=self.name,
                    image=str(image),
                    label=str(label),
                    spacing=spacing,
                    meta={"spacing_source": origin},
                )
            )
        return cases

    def load(self, case: Case) -> tuple[Volume, Volume | None]:
        """Read a case's image and label in (X, Y, Z) order with the case's voxel size.

        The label becomes ``uint8`` with 1 for vessel (any non-zero value) and 0 elsewhere.

        Raises:
            DataError: A file cannot be read, the label holds more than one non-zero value
                (``label-binary``), or image and label shapes differ (``shape-mismatch``).
        """
        image = read_tiff(case.image, spacing=case.spacing)
        if case.label is None:
            return image, None
        label = read_tiff(case.label, spacing=case.spacing)
        if label.shape != image.shape:
            raise DataError(
                case.label,
                "shape-mismatch",
                f"label shape {label.shape} differs from image shape {image.shape} of "
                f"{case.image}; the label must be a stack of the same size as its image",
            )
        return image, label.with_array(_binarize(label))


def _find_images(root: Path) -> dict[str, Path]:
    """NAME -> image path for every ``denoised/NAME_BM4D_denoised.tif``."""
    folder = root / "denoised"
    images = {
        p.name[: -len(IMAGE_SUFFIX)]: p
        for p in folder.glob(f"*{IMAGE_SUFFIX}")
        if p.is_file() and not p.name.startswith(".")
    }
    if not images:
        raise DataError(
            folder,
            "no-cases",
            f"no *{IMAGE_SUFFIX} images found; expected the VesselNN layout "
            "denoised/NAME_BM4D_denoised.tif with labels/NAME_*.tif",
        )
    return images


def _assign_labels(folder: Path, names: list[str]) -> dict[str, list[Path]]:
    """Each label file in ``folder`` under the longest image NAME it starts with (plus ``_``)."""
    assigned: dict[str, list[Path]] = {name: [] for name in names}
    by_length = sorted(names, key=len, reverse=True)
    candidates = sorted(folder.glob("*")) if folder.is_dir() else []
    for path in candidates:
        if not path.is_file() or not path.name.lower().endswith(TIFF_SUFFIXES):
            continue
        owner = next((n for n in by_length if path.name.startswith(n + "_")), None)
        if owner is not None:
            assigned[owner].append(path)
    return assigned


def _single_label(case_id: str, image: Path, labels: list[Path]) -> Path:
    if not labels:
        raise DataError(
            image,
            "missing-label",
            f"no label for {case_id}: expected one file labels/{case_id}_*.tif",
        )
    if len(labels) > 1:
        names = ", ".join(p.name for p in labels)
        raise DataError(
            image,
            "ambiguous-label",
            f"{len(labels)} labels match {case_id} ({names}); keep exactly one "
            f"labels/{case_id}_*.tif",
        )
    return labels[0]


def _spacing_for(folder: Path, case_id: str) -> tuple[Spacing, str]:
    """The case's (X, Y, Z) voxel size and where it came from."""
    path = folder / f"{case_id}{METADATA_SUFFIX}"
    if path.is_file():
        return _read_metadata(path), "metadata"
    spacing, origin = (
        (KNOWN_SPACING[case_id], "known-default")
        if case_id in KNOWN_SPACING
        else (DEFAULT_SPACING, "default")
    )
    why = "upstream notes for this stack" if origin == "known-default" else "most common value"
    warnings.warn(
        f"{path}: no metadata for {case_id}; using voxel size "
        f"{spacing[0]} x {spacing[1]} x {spacing[2]} um ({why}). Add the OME-XML file to "
        "use the true voxel size.",
        MissingMetadataWarning,
        stacklevel=3,
    )
    return spacing, origin


def _read_metadata(path: Path) -> Spacing:
    try:
        spacing = parse_ome_spacing(path.read_bytes())
    except OSError as exc:
        raise DataError(path, "metadata", f"cannot read metadata file ({exc})") from exc
    if spacing is None or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise DataError(
            path,
            "metadata",
            "no usable voxel size: expected OME-XML with positive PhysicalSizeX, "
            "PhysicalSizeY and PhysicalSizeZ on <Pixels>; fix or delete the file "
            "(a missing file falls back to a documented default)",
        )
    return spacing


def _binarize(label: Volume) -> np.ndarray:
    """1 where the label is non-zero; a label with two different non-zero values is refused."""
    array = label.array
    vessel = array != 0
    values = array[vessel]
    if values.size and (values != values[0]).any():
        found = np.unique(values)
        shown = ", ".join(str(v) for v in found[:5]) + (", ..." if found.size > 5 else "")
        raise DataError(
            label.source,
            "label-binary",
            f"label must be binary (0 and one vessel value) but has non-zero values {shown}; "
            "multi-class labels are not supported",
        )
    return vessel.astype(np.uint8)
