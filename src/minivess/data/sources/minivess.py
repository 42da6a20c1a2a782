"""MiniVess layouts: the EBRAINS release (a folder or the downloaded zip) and Decathlon folders.

The EBRAINS release of MiniVess (Poon et al. 2023, Sci Data 10:141) holds ``raw/mvNN.nii.gz``
(image), ``seg/mvNN_y.nii.gz`` (label) and ``json/mvNN.json`` (acquisition metadata). The
Medical Segmentation Decathlon / nnU-Net layout holds ``imagesTr/NAME[_0000].nii.gz`` and
``labelsTr/NAME.nii.gz``.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from minivess.data.archive import MAX_DECOMPRESSED_BYTES, read_member, split_archive
from minivess.data.io import NIFTI_SUFFIXES, nifti_from_bytes, read_volume
from minivess.data.sources.base import Case, DatasetSource
from minivess.data.volume import Volume, affine_from_spacing
from minivess.errors import DataError

_EBRAINS_FOLDERS = ("raw", "seg", "json")
_ZIP_MEMBER = re.compile(r"^(?:(?P<top>[^/]+)/)?(?P<folder>raw|seg|json)/(?P<name>[^/]+)$")
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")

#: Side-car keys that may declare the voxel size (micrometres, (X, Y, Z) = (H, W, D)).
_SPACING_KEYS = ("spacing", "voxel_size")
_OME_SPACING_KEYS = ("PhysicalSizeX", "PhysicalSizeY", "PhysicalSizeZ")


def _nifti_stem(name: str) -> str | None:
    """File name without its NIfTI suffix; ``None`` for hidden or non-NIfTI files."""
    if name.startswith("."):
        return None
    lower = name.lower()
    for suffix in NIFTI_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _json_stem(name: str) -> str | None:
    if name.startswith(".") or not name.lower().endswith(".json"):
        return None
    return name[: -len(".json")]


def _check_inside(path: Path, root: Path) -> None:
    """Refuse a file that resolves (through symlinks) outside the dataset folder."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise DataError(
            path,
            "outside-root",
            f"resolves to {resolved}, outside the dataset folder {root}; "
            "copy the file into the dataset instead of linking to it",
        )


def _list_folder(
    directory: Path, root: Path, stem_of: Callable[[str], str | None]
) -> list[tuple[str, str]]:
    """(stem, path) of the data files in ``directory``, each checked to lie inside ``root``."""
    files = []
    for path in sorted(directory.iterdir()) if directory.is_dir() else []:
        stem = stem_of(path.name)
        if stem is not None and not path.is_dir():
            _check_inside(path, root)
            files.append((stem, str(path)))
    return files


def _index(files: Iterable[tuple[str, str]], folder: str) -> dict[str, str]:
    """Case id -> location, refusing two files that claim the same case."""
    found: dict[str, str] = {}
    for case_id, location in files:
        if case_id in found:
            raise DataError(
                location,
                "duplicate-case",
                f"case {case_id!r} also comes from {found[case_id]}; keep one file per case "
                f"in {folder}/",
            )
        found[case_id] = location
    return found


def _pair(
    images: dict[str, str],
    labels: dict[str, str],
    expected_label: Callable[[str], str],
    expected_image: Callable[[str], str],
) -> list[tuple[str, str, str]]:
    """(case id, image, label) for every case; an error for any unmatched file."""
    for case_id, image in sorted(images.items()):
        if case_id not in labels:
            raise DataError(
                image,
                "missing-label",
                f"no label for case {case_id!r}: expected {expected_label(case_id)}",
            )
    for case_id, label in sorted(labels.items()):
        if case_id not in images:
            raise DataError(
                label,
                "missing-image",
                f"label without an image: expected {expected_image(case_id)}",
            )
    return [(case_id, images[case_id], labels[case_id]) for case_id in sorted(images)]


def _no_cases(root: Path, folder: str) -> DataError:
    return DataError(root, "no-cases", f"no .nii or .nii.gz images found in {folder}/")


def _sidecar_spacing(meta: dict[str, Any], location: str) -> tuple[float, float, float] | None:
    """Voxel size a side-car declares under a known key, or ``None`` if it declares none."""
    values: Any
    key = next((k for k in _SPACING_KEYS if k in meta), None)
    if key is not None:
        values = meta[key]
    elif all(k in meta for k in _OME_SPACING_KEYS):
        values = [meta[k] for k in _OME_SPACING_KEYS]
    else:
        return None
    try:
        spacing = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        spacing = ()
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise DataError(
            location,
            "metadata",
            f"voxel size {values!r} is not three positive numbers (micrometres); fix or remove it",
        )
    return spacing[0], spacing[1], spacing[2]


def _parse_sidecar(data: bytes, location: str) -> dict[str, Any]:
    try:
        meta = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(location, "metadata", f"not valid UTF-8 JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise DataError(location, "metadata", "expected a JSON object of acquisition metadata")
    return meta


def _declares_spacing(header: Any) -> bool:
    """Whether a NIfTI header carries real geometry rather than nibabel's 1-voxel default."""
    if int(header["qform_code"]) > 0 or int(header["sform_code"]) > 0:
        return True
    return not np.allclose(header["pixdim"][1:4], 1.0)


def _apply_sidecar_spacing(vol: Volume, spacing: tuple[float, float, float] | None) -> Volume:
    """Use the side-car voxel size only where the NIfTI header has none."""
    if spacing is None or _declares_spacing(vol.header):
        return Volume(vol.array, vol.affine, vol.source, vol.header, {"spacing_source": "nifti"})
    affine = affine_from_spacing(spacing)
    header = vol.header.copy()
    # Keep header and affine consistent so a later write_nifti reproduces this geometry.
    header.set_xyzt_units(xyz="micron")
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    return Volume(vol.array, affine, vol.source, header, {"spacing_source": "json"})


def _folder_bases(root: Path) -> list[Path]:
    """Folders holding ``raw/`` and ``seg/``: ``root`` itself, else its direct sub-folders."""
    if not root.is_dir():
        return []
    if (root / "raw").is_dir() and (root / "seg").is_dir():
        return [root]
    return sorted(
        child
        for child in root.iterdir()
        if child.is_dir() and (child / "raw").is_dir() and (child / "seg").is_dir()
    )


def _zip_entries(archive: Path) -> dict[str, dict[str, list[str]]]:
    """Top folder ("" for none) -> EBRAINS folder -> member names, from the zip's directory."""
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
    tops: dict[str, dict[str, list[str]]] = {}
    for name in names:
        match = _ZIP_MEMBER.match(name)
        # Hidden names include the "._*" resource forks of zips made on macOS.
        if match is None or match["name"].startswith("."):
            continue
        folders = tops.setdefault(match["top"] or "", {f: [] for f in _EBRAINS_FOLDERS})
        folders[match["folder"]].append(name)
    return {top: f for top, f in tops.items() if f["raw"] and f["seg"]}


def _is_zip(root: Path) -> bool:
    return root.is_file() and root.suffix.lower() == ".zip"


class MiniVessSource(DatasetSource):
    """The EBRAINS release of MiniVess, as a folder or as the downloaded ``.zip``.

    ``root`` is the zip itself or a folder holding ``raw/``, ``seg/`` and (optionally)
    ``json/``, directly or one level down (the zip's top folder once extracted). Each case keeps
    its parsed JSON side-car in ``meta["acquisition"]``; a voxel size declared there
    (``spacing``, ``voxel_size`` or OME's ``PhysicalSizeX/Y/Z``, in micrometres) is used only
    for volumes whose NIfTI header declares none.

    Args:
        max_decompressed_bytes: Largest size one zip member may expand to.

    Example:
        >>> source = MiniVessSource()
        >>> source.detect(Path("no-such-folder"))
        False
    """

    name: ClassVar[str] = "minivess"

    def __init__(self, max_decompressed_bytes: int = MAX_DECOMPRESSED_BYTES) -> None:
        self.max_decompressed_bytes = max_decompressed_bytes

    @classmethod
    def detect(cls, root: Path) -> bool:
        """Whether ``root`` is a MiniVess zip or folder (reads names only)."""
        root = Path(root)
        if _is_zip(root):
            try:
                return bool(_zip_entries(root))
            except (OSError, zipfile.BadZipFile):
                return False
        return bool(_folder_bases(root))

    def discover(self, root: Path) -> list[Case]:
        """Every image with its label and side-car, sorted by case id.

        Raises:
            DataError: No MiniVess layout, several candidate layouts, an unmatched image or
                label, a file outside ``root``, or a malformed side-car.
        """
        root = Path(root)
        files = self._zip_files(root) if _is_zip(root) else self._folder_files(root)
        images = _index(files["raw"], "raw")
        labels = _index(((s.removesuffix("_y"), loc) for s, loc in files["seg"]), "seg")
        sidecars = dict(files["json"])
        if not images:
            raise _no_cases(root, "raw")
        pairs = _pair(images, labels, lambda c: f"seg/{c}_y.nii.gz", lambda c: f"raw/{c}.nii.gz")
        return [self._case(c, image, label, sidecars.get(c)) for c, image, label in pairs]

    def load(self, case: Case) -> tuple[Volume, Volume | None]:
        """The image and label volumes of ``case``, from the folder or straight from the zip."""
        image = self._read(case.image, case.spacing)
        label = self._read(case.label, case.spacing) if case.label is not None else None
        return image, label

    def _case(self, case_id: str, image: str, label: str, sidecar: str | None) -> Case:
        if sidecar is None:
            return Case(case_id, self.name, image, label)
        meta = _parse_sidecar(self._read_bytes(sidecar), sidecar)
        spacing = _sidecar_spacing(meta, sidecar)
        return Case(case_id, self.name, image, label, spacing, {"acquisition": meta})

    def _read_bytes(self, location: str) -> bytes:
        archive = split_archive(location)
        if archive is not None:
            return read_member(*archive, self.max_decompressed_bytes)
        try:
            return Path(location).read_bytes()
        except OSError as exc:
            raise DataError(location, "missing-file", f"cannot read ({exc})") from exc

    def _read(self, location: str, spacing: tuple[float, float, float] | None) -> Volume:
        archive = split_archive(location)
        if archive is None:
            vol = read_volume(location)
        else:
            vol = nifti_from_bytes(read_member(*archive, self.max_decompressed_bytes), location)
        return _apply_sidecar_spacing(vol, spacing)

    @staticmethod
    def _layout_error(root: Path, bases: list[str]) -> DataError:
        if bases:
            return DataError(
                root,
                "ambiguous-layout",
                f"several MiniVess copies found ({', '.join(bases)}); point at one of them",
            )
        return DataError(
            root, "layout", "not a MiniVess dataset: expected raw/, seg/ and json/ or the .zip"
        )

    def _folder_files(self, root: Path) -> dict[str, list[tuple[str, str]]]:
        bases = _folder_bases(root)
        if len(bases) != 1:
            raise self._layout_error(root, [str(b) for b in bases])
        return {
            folder: _list_folder(
                bases[0] / folder, root, _json_stem if folder == "json" else _nifti_stem
            )
            for folder in _EBRAINS_FOLDERS
        }

    def _zip_files(self, root: Path) -> dict[str, list[tuple[str, str]]]:
        try:
            tops = _zip_entries(root)
        except (OSError, zipfile.BadZipFile) as exc:
            raise DataError(root, "corrupt-file", f"cannot read zip archive ({exc})") from exc
        if len(tops) != 1:
            raise self._layout_error(root, [f"{root}!{top}/" for top in sorted(tops)])
        files: dict[str, list[tuple[str, str]]] = {f: [] for f in _EBRAINS_FOLDERS}
        for folder, members in next(iter(tops.values())).items():
            for member in sorted(members):
                base = member.rsplit("/", 1)[-1]
                stem = _json_stem(base) if folder == "json" else _nifti_stem(base)
                if stem is not None:
                    files[folder].append((stem, f"{root}!{member}"))
        return files


class DecathlonSource(DatasetSource):
    """A Medical Segmentation Decathlon / nnU-Net raw folder: ``imagesTr/`` + ``labelsTr/``.

    Images match labels by file name; nnU-Net's channel suffix ``_0000`` on images is accepted
    (``mv01_0000.nii.gz`` pairs with ``mv01.nii.gz``). ``dataset.json`` is not needed and
    ``imagesTs/`` (unlabelled) is not part of training discovery.

    Example:
        >>> DecathlonSource.detect(Path("no-such-folder"))
        False
    """

    name: ClassVar[str] = "decathlon"

    @classmethod
    def detect(cls, root: Path) -> bool:
        """Whether ``root`` holds ``imagesTr/`` and ``labelsTr/`` (reads names only)."""
        root = Path(root)
        return (root / "imagesTr").is_dir() and (root / "labelsTr").is_dir()

    def discover(self, root: Path) -> list[Case]:
        """Every training image with its label, sorted by case id.

        Raises:
            DataError: Missing folders, an unmatched image or label, a second channel, or a
                file outside ``root``.
        """
        root = Path(root)
        if not self.detect(root):
            raise DataError(
                root, "layout", "not a Decathlon dataset: expected imagesTr/, labelsTr/"
            )
        channels = _single_channel(_list_folder(root / "imagesTr", root, _nifti_stem))
        images = _index(channels, "imagesTr")
        labels = _index(_list_folder(root / "labelsTr", root, _nifti_stem), "labelsTr")
        if not images:
            raise _no_cases(root, "imagesTr")
        pairs = _pair(
            images,
            labels,
            lambda c: f"labelsTr/{c}.nii.gz",
            lambda c: f"imagesTr/{c}.nii.gz or imagesTr/{c}_0000.nii.gz",
        )
        return [Case(c, self.name, image, label) for c, image, label in pairs]

    def load(self, case: Case) -> tuple[Volume, Volume | None]:
        """The image and label volumes of ``case``, as stored."""
        label = read_volume(case.label) if case.label is not None else None
        return read_volume(case.image), label


def _single_channel(images: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Case ids of nnU-Net images: stems without ``_0000``; a second channel is refused."""
    stems = {stem for stem, _ in images}
    cases = []
    for stem, location in images:
        match = _CHANNEL.match(stem)
        if match is not None and match["channel"] == "0000":
            stem = match["case"]
        elif match is not None and f"{match['case']}_0000" in stems:
            raise DataError(
                location,
                "channels",
                "only single-channel images are supported; keep channel _0000, remove the others",
            )
        cases.append((stem, location))
    return cases
