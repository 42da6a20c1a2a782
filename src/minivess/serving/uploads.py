"""Check an uploaded volume before it is decoded, then read it with the project's own readers.

An upload is judged in the order that costs least: its file name (never used as a path), its
magic bytes, its header (dimensionality and voxel count, so a decompression bomb is refused
before it is inflated), and only then its voxels (spacing, NaN/inf). Every refusal is an
:class:`UploadRejected` carrying the HTTP status to answer with and a message saying how to fix
the file.
"""

from __future__ import annotations

import gzip
import io
import math
import zlib
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

import nibabel as nib
import tifffile

from minivess.data.io import NIFTI_SUFFIXES, TIFF_SUFFIXES, read_volume
from minivess.data.volume import Volume
from minivess.errors import DataError, MinivessError

ACCEPTED = ".nii, .nii.gz, .tif, .tiff or .ome.tif"
"""The volume formats the service segments, as shown in messages."""
MAX_NAME_LENGTH = 255
_GZIP_MAGIC = b"\x1f\x8b"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_NIFTI_HEADER_BYTES = 540  # NIfTI-2; a NIfTI-1 header is the first 348
_SUFFIX_FOR_FORMAT = {"nifti-gz": ".nii.gz", "nifti": ".nii", "tiff": ".tif"}


class UploadRejected(MinivessError):
    """An upload the service refuses, with the HTTP status to answer with.

    Args:
        status: 400 (bad content), 413 (too large) or 415 (not a volume format).
        rule: Short name of the broken rule, e.g. ``"dimensionality"``.
        message: What is wrong and how to fix it.
    """

    def __init__(self, status: HTTPStatus, rule: str, message: str) -> None:
        self.status = status
        self.rule = rule
        self.message = message
        super().__init__(f"[{rule}] {message}")


@dataclass(frozen=True)
class UploadHeader:
    """What the header of an upload says, read without decoding its voxels.

    Args:
        format: ``"nifti"``, ``"nifti-gz"`` or ``"tiff"``.
        shape: Spatial shape after dropping singleton axes.
    """

    format: str
    shape: tuple[int, ...]

    @property
    def voxels(self) -> int:
        """Number of voxels the volume would decode to."""
        return math.prod(self.shape)


def check_file_name(name: str | None) -> None:
    """Refuse file names that are not plain names: the service never uses them as paths.

    Args:
        name: The ``filename`` of a multipart part; ``None`` when the part is not a file.

    Raises:
        UploadRejected: 400 for a missing, path-like, over-long or control-character name;
            415 for a suffix that is not a volume format.
    """
    if name is None:
        raise UploadRejected(
            HTTPStatus.BAD_REQUEST,
            "not-a-file",
            "the 'file' field must be a file upload, e.g. curl -F file=@volume.nii.gz",
        )
    plain = (
        name
        and len(name) <= MAX_NAME_LENGTH
        and "/" not in name
        and "\\" not in name
        and name not in {".", ".."}
        and all(ch.isprintable() for ch in name)
    )
    if not plain:
        raise UploadRejected(
            HTTPStatus.BAD_REQUEST,
            "file-name",
            f"file name {name[:80]!r} is not a plain file name (no folders, '..', control "
            f"characters, at most {MAX_NAME_LENGTH} characters); rename it, e.g. volume.nii.gz",
        )
    if "." in name and not name.lower().endswith((*NIFTI_SUFFIXES, *TIFF_SUFFIXES)):
        raise UploadRejected(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            "file-type",
            f"{name[:80]!r} is not a volume file; upload {ACCEPTED}",
        )


def read_header(path: Path, max_voxels: int) -> UploadHeader:
    """Identify an upload by its magic bytes and check its header, without reading voxels.

    Args:
        path: The uploaded bytes on disk (its name is not trusted).
        max_voxels: Largest voxel count accepted.

    Raises:
        UploadRejected: 415 for an unknown format, 400 for a corrupt header or a volume that
            is not 3D, 413 for more than ``max_voxels`` voxels.
    """
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic.startswith(_GZIP_MAGIC):
        header = UploadHeader("nifti-gz", _nifti_shape(_gunzip_head(path)))
    elif magic in _TIFF_MAGICS:
        header = UploadHeader("tiff", _tiff_shape(path))
    else:
        with path.open("rb") as fh:
            block = fh.read(_NIFTI_HEADER_BYTES)
        if not _looks_like_nifti(block):
            raise UploadRejected(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                "file-type",
                f"the content is not a NIfTI or TIFF volume (by its first bytes); "
                f"upload {ACCEPTED}",
            )
        header = UploadHeader("nifti", _nifti_shape(block))
    if len(header.shape) != 3 or min(header.shape) < 1:
        raise UploadRejected(
            HTTPStatus.BAD_REQUEST,
            "dimensionality",
            f"expected a 3D volume, got shape {header.shape}; upload one 3D stack per request",
        )
    if header.voxels > max_voxels:
        raise UploadRejected(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            "too-many-voxels",
            f"volume {header.shape} has {header.voxels:,} voxels, above the limit of "
            f"{max_voxels:,} (serve.max_voxels); crop or downsample it",
        )
    return header


def read_upload(path: Path, workdir: Path, *, max_voxels: int, name: str | None = None) -> Volume:
    """The checked volume of an upload, read by :func:`minivess.data.io.read_volume`.

    The bytes are moved to a name the service chooses inside ``workdir`` (the readers pick
    their format by suffix); the client's file name is only compared with the content.

    Args:
        path: The uploaded bytes on disk; moved away by this call.
        workdir: A private folder for this request, removed by the caller.
        max_voxels: Largest voxel count accepted.
        name: The file name the client gave, if known, to catch a mislabelled file.

    Raises:
        UploadRejected: See :func:`read_header`; also 415 when ``name`` says TIFF but the
            content is NIfTI or the other way round, and 400 for corrupt voxels, invalid
            spacing or NaN/inf values.
    """
    # Imported here: torch and MONAI behind it would slow every process that loads the service.
    from minivess.inference.predictor import check_volume

    header = read_header(path, max_voxels)
    _check_name_matches(name, header.format)
    target = workdir / f"upload{_SUFFIX_FOR_FORMAT[header.format]}"
    path.replace(target)
    try:
        volume = read_volume(target)
        check_volume(volume)
    except DataError as exc:
        message = exc.message.replace(str(target), "the upload")
        raise UploadRejected(HTTPStatus.BAD_REQUEST, exc.rule, message) from None
    return volume


def _check_name_matches(name: str | None, content_format: str) -> None:
    if not name or "." not in name:
        return
    named_tiff = name.lower().endswith(TIFF_SUFFIXES)
    if named_tiff != (content_format == "tiff"):
        said, held = ("TIFF", "NIfTI") if named_tiff else ("NIfTI", "TIFF")
        raise UploadRejected(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            "file-type",
            f"the file name says {said} ({Path(name).suffix}) but the content is {held}; "
            "fix the file name or upload the right file",
        )


def _gunzip_head(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read(_NIFTI_HEADER_BYTES)
    except (OSError, EOFError, zlib.error) as exc:
        raise UploadRejected(
            HTTPStatus.BAD_REQUEST, "corrupt-file", f"cannot decompress the gzip upload ({exc})"
        ) from None


def _looks_like_nifti(block: bytes) -> bool:
    """NIfTI-1 or -2 single-file magic (``n+1`` / ``n+2``) at the place each version puts it."""
    return (len(block) >= 348 and block[344:347] == b"n+1") or (
        len(block) >= 12 and block[4:7] == b"n+2"
    )


def _nifti_shape(block: bytes) -> tuple[int, ...]:
    if not _looks_like_nifti(block):
        raise UploadRejected(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            "file-type",
            f"the gzip upload does not hold a single-file NIfTI (.nii.gz); upload {ACCEPTED}",
        )
    kind = nib.Nifti2Header if block[4:7] == b"n+2" else nib.Nifti1Header
    try:
        header = kind.from_fileobj(io.BytesIO(block), check=False)
        shape = tuple(int(s) for s in header.get_data_shape())
    except Exception as exc:  # nibabel raises a zoo of types for broken headers
        raise UploadRejected(
            HTTPStatus.BAD_REQUEST,
            "corrupt-file",
            f"cannot read the NIfTI header ({type(exc).__name__}: {exc})",
        ) from None
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _tiff_shape(path: Path) -> tuple[int, ...]:
    try:
        with tifffile.TiffFile(path) as tif:
            shape = tuple(int(s) for s in tif.series[0].shape)
    except Exception as exc:  # tifffile raises many types for broken files
        raise UploadRejected(
            HTTPStatus.BAD_REQUEST,
            "corrupt-file",
            f"cannot read the TIFF structure ({type(exc).__name__}: {exc})",
        ) from None
    while len(shape) > 3 and shape[0] == 1:  # leading T/C singletons, as read_tiff drops them
        shape = shape[1:]
    return shape
