"""Reading and writing volumes: NIfTI (nibabel) and multi-page / OME TIFF (tifffile).

Every reader returns a :class:`~minivess.data.volume.Volume` in (H, W, D) order with its
affine; every failure is a :class:`~minivess.errors.DataError` naming the file.
Writes are atomic: a file appears complete under its final name or not at all.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
import tifffile

from minivess.data.volume import Volume, affine_from_spacing
from minivess.errors import DataError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
TIFF_SUFFIXES = (".ome.tif", ".ome.tiff", ".tif", ".tiff")

MAX_VOXELS = 2**30
"""Largest volume any reader decodes (about 10^9 voxels, 4 GiB as float32); a header declaring
more is refused before a byte of voxels is read, so a tiny file cannot claim terabytes."""

#: Spatial units NIfTI can declare, as micrometres per unit. NIfTI files written without a unit
#: ("unknown") are taken to be in micrometres, the convention of microscopy tools and MiniVess.
_NIFTI_UNIT_TO_UM = {"micron": 1.0, "mm": 1000.0, "meter": 1e6, "unknown": 1.0}


def volume_format(path: str | Path) -> str:
    """``"nifti"`` or ``"tiff"`` from the file name; a :class:`DataError` for anything else."""
    name = Path(path).name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(TIFF_SUFFIXES):
        return "tiff"
    raise DataError(
        path, "file-type", "not a volume file: expected .nii, .nii.gz, .tif, .tiff or .ome.tif"
    )


def read_volume(path: str | Path) -> Volume:
    """Read a 3D NIfTI or TIFF volume.

    Args:
        path: A ``.nii``, ``.nii.gz``, ``.tif``, ``.tiff`` or ``.ome.tif`` file.

    Returns:
        The volume in (H, W, D) order with its affine in micrometres.

    Raises:
        DataError: The file is missing, corrupt, not 3D, or has invalid spacing.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "missing-file", "file does not exist")
    reader = read_nifti if volume_format(path) == "nifti" else read_tiff
    return reader(path)


def _squeeze_to_3d(array: np.ndarray, path: Path) -> np.ndarray:
    """Drop singleton axes beyond the third; refuse anything that is not a 3D volume."""
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise DataError(
            path,
            "dimensionality",
            f"expected a 3D volume, got {array.ndim}D with shape {tuple(array.shape)}",
        )
    if min(array.shape) < 1:
        raise DataError(path, "dimensionality", f"empty volume with shape {tuple(array.shape)}")
    return array


def _check_declared_size(shape: tuple[int, ...], path: Path) -> None:
    """Refuse a header that declares more than :data:`MAX_VOXELS` voxels, before decoding."""
    voxels = int(np.prod([max(int(s), 0) for s in shape], dtype=np.float64))
    if voxels > MAX_VOXELS:
        raise DataError(
            path,
            "too-many-voxels",
            f"the header declares shape {shape} ({voxels:,} voxels), above the {MAX_VOXELS:,} "
            "a volume may have; crop or downsample it",
        )


def _check_spacing(spacing: tuple[float, ...], path: Path) -> None:
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise DataError(
            path, "spacing", f"voxel spacing must be three positive numbers, got {tuple(spacing)}"
        )


def read_nifti(path: str | Path) -> Volume:
    """Read a NIfTI-1/2 file, keeping its header so writes can reuse its orientation codes."""
    path = Path(path)
    try:
        img = cast(Any, nib.load(str(path)))
        _check_declared_size(tuple(img.shape), path)
        array = np.asanyarray(img.dataobj)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise DataError(path, "corrupt-file", f"cannot read NIfTI ({exc})") from exc
    except Exception as exc:  # nibabel raises a zoo of types for broken headers
        raise DataError(
            path, "corrupt-file", f"cannot read NIfTI ({type(exc).__name__}: {exc})"
        ) from exc
    _check_raw_zooms(path)
    return _volume_from_nifti(img, np.asarray(array), path)


def nifti_from_bytes(data: bytes, location: str) -> Volume:
    """A volume from the bytes of an uncompressed NIfTI-1 file, exactly as ``read_nifti`` would.

    Args:
        data: The file's bytes (already gunzipped), e.g. read from inside a zip archive.
        location: Where the bytes came from, used in errors and as ``Volume.source``.

    Raises:
        DataError: The bytes are not a readable 3D NIfTI-1 volume with valid spacing.
    """
    path = Path(location)
    try:
        img = nib.Nifti1Image.from_bytes(data)
        array = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises a zoo of types for broken headers
        raise DataError(
            path, "corrupt-file", f"cannot read NIfTI ({type(exc).__name__}: {exc})"
        ) from exc
    return _volume_from_nifti(img, np.asarray(array), path)


def _volume_from_nifti(img: Any, array: np.ndarray, path: Path) -> Volume:
    """The Volume for a loaded NIfTI image: 3D voxels, affine scaled to micrometres, header."""
    array = _squeeze_to_3d(array, path)
    unit = img.header.get_xyzt_units()[0] or "unknown"
    affine = np.asarray(img.affine, dtype=np.float64).copy()
    affine[:3, :] *= _NIFTI_UNIT_TO_UM.get(unit, 1.0)
    vol = Volume(array=array, affine=affine, source=path, header=img.header.copy())
    _check_spacing(vol.spacing, path)
    return vol


def _check_raw_zooms(path: Path) -> None:
    """Refuse zero/negative/NaN voxel sizes that nibabel would silently replace with 1 on load."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as fh:
        block = fh.read(348)
    header = nib.Nifti1Header(binaryblock=block, check=False)
    zooms = tuple(float(z) for z in header["pixdim"][1:4])
    _check_spacing(tuple(abs(z) if np.isfinite(z) and z != 0 else 0.0 for z in zooms), path)


def _ome_spacing(tif: tifffile.TiffFile) -> tuple[float, float, float] | None:
    """(X, Y, Z) voxel size in micrometres from OME-XML, if the file carries it."""
    if not tif.is_ome or not tif.ome_metadata:
        return None
    return parse_ome_spacing(tif.ome_metadata)


def parse_ome_spacing(xml: str | bytes) -> tuple[float, float, float] | None:
    """(X, Y, Z) physical voxel size in micrometres from an OME-XML document, or ``None``.

    Sizes given in nm or mm are converted; a missing Z size gives ``None``.
    """
    import re

    text = xml.decode("latin-1") if isinstance(xml, bytes) else xml
    match = re.search(r"<Pixels\b[^>]*>", text)
    if match is None:
        return None
    tag = match.group(0)
    unit_scale = {"nm": 1e-3, "µm": 1.0, "um": 1.0, "mm": 1e3, "m": 1e6}
    sizes = []
    for axis in "XYZ":
        value = re.search(rf'PhysicalSize{axis}="([^"]+)"', tag)
        unit = re.search(rf'PhysicalSize{axis}Unit="([^"]+)"', tag)
        if value is None:
            return None
        try:
            size = float(value.group(1))
        except ValueError:
            return None
        sizes.append(size * unit_scale.get(unit.group(1) if unit else "µm", 1.0))
    return sizes[0], sizes[1], sizes[2]


def read_tiff(path: str | Path, spacing: tuple[float, float, float] | None = None) -> Volume:
    """Read a multi-page (Z, Y, X) TIFF stack into (X, Y, Z) order.

    Args:
        path: The TIFF file.
        spacing: (X, Y, Z) voxel size in micrometres; if omitted, taken from OME-XML when the
            file has it, else 1 um isotropic with ``meta["spacing_source"] = "default"``.
    """
    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            _check_declared_size(tuple(tif.series[0].shape), path)
            array = tif.series[0].asarray()
            found = _ome_spacing(tif)
    except DataError:
        raise
    except Exception as exc:  # tifffile raises many types for broken files
        raise DataError(
            path, "corrupt-file", f"cannot read TIFF ({type(exc).__name__}: {exc})"
        ) from exc
    array = np.asarray(array)
    while array.ndim > 3 and array.shape[0] == 1:  # leading T/C singletons in OME stacks
        array = array[0]
    if array.ndim != 3:
        raise DataError(
            path,
            "dimensionality",
            f"expected a 3D (Z, Y, X) stack, got {array.ndim}D with shape {tuple(array.shape)}",
        )
    array = np.ascontiguousarray(np.transpose(array, (2, 1, 0)))
    chosen = spacing or found
    meta = {"spacing_source": "given" if spacing else ("ome" if found else "default")}
    vol = Volume(array, affine_from_spacing(chosen or (1.0, 1.0, 1.0)), source=path, meta=meta)
    _check_spacing(vol.spacing, path)
    return vol


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _nifti_name_for(path: Path) -> str:
    """Suffix nibabel uses to pick compression for a temp file standing in for ``path``."""
    return ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"


def write_nifti(
    path: str | Path, array: np.ndarray, like: Volume, dtype: np.dtype | type | None = None
) -> Path:
    """Write ``array`` as NIfTI with exactly the geometry of ``like``.

    The affine, shape and orientation codes of ``like`` are kept (its NIfTI header is reused
    when it came from a NIfTI file); spatial units are written as micrometres for other inputs.

    Args:
        path: Destination ``.nii`` or ``.nii.gz``.
        array: Voxels with the same spatial shape as ``like``.
        like: The volume whose geometry the output must carry (usually the input image).
        dtype: On-disk dtype; defaults to the array's dtype.
    """
    path = Path(path)
    if volume_format(path) != "nifti":
        raise DataError(path, "file-type", "output must end in .nii or .nii.gz")
    array = np.asarray(array, dtype=dtype) if dtype is not None else np.asarray(array)
    if tuple(array.shape) != like.shape:
        raise ValueError(f"array shape {array.shape} does not match reference {like.shape}")
    if like.header is not None:
        header = like.header.copy()
        unit = header.get_xyzt_units()[0] or "unknown"
        affine = like.affine.copy()
        affine[:3, :] /= _NIFTI_UNIT_TO_UM.get(unit, 1.0)
        img = nib.Nifti1Image(array, affine, header=header)
        img.set_data_dtype(array.dtype)
        img.header.set_slope_inter(1.0, 0.0)
    else:
        img = nib.Nifti1Image(array, like.affine)
        img.header.set_xyzt_units(xyz="micron")
        img.set_qform(like.affine, code=1)
        img.set_sform(like.affine, code=1)
    with atomic_path(path) as tmp:
        staged = tmp.with_name(tmp.name + _nifti_name_for(path))
        try:
            nib.save(img, str(staged))
            os.replace(staged, tmp)
        finally:
            staged.unlink(missing_ok=True)
    return path
