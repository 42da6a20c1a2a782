"""Volumes read and written piece by piece, for prediction within a memory budget.

:func:`open_lazy` reads any (H, W, D) box of a NIfTI or TIFF file without loading the rest:
an uncompressed ``.nii`` is memory-mapped by nibabel, so a box costs only its own bytes; a
``.nii.gz`` can be sliced too, but gzip has no random access, so each box decompresses the file
from its start up to the box (correct, slow for big files: gunzip it first). A TIFF is read
page by page (one page is one depth slice). :func:`nifti_memmap` preallocates an uncompressed
NIfTI whose voxels are written in place and which appears under its final name only when
complete; :func:`drop_pages` writes its dirty pages out and releases them, so that the written
part of the file does not stay in the process's resident memory.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
import tifffile

from minivess.data.io import atomic_path, parse_ome_spacing, volume_format
from minivess.data.volume import affine_from_spacing
from minivess.errors import DataError

Box = tuple[slice, slice, slice]
"""An (H, W, D) box with explicit starts and stops."""

_SINGLE_FILE_OFFSET = 352  # 348-byte NIfTI-1 header plus the 4-byte extension flag


@dataclass
class LazyVolume:
    """A 3D volume on disk that hands out boxes of voxels on request.

    Args:
        path: The file.
        shape: Its (H, W, D) shape.
        dtype: The dtype boxes come back in.
        header: A NIfTI-1 header carrying the file's geometry, for outputs on its grid.
        reader: Returns the voxels of one box as an ``(h, w, d)`` array.
    """

    path: Path
    shape: tuple[int, int, int]
    dtype: np.dtype
    header: nib.Nifti1Header
    reader: Any

    def read(self, box: Box) -> np.ndarray:
        """The voxels of ``box`` (a new array of ``dtype``)."""
        return np.asarray(self.reader(box))

    @property
    def nbytes(self) -> int:
        """Bytes the whole volume takes in memory at its own dtype."""
        return int(np.prod(self.shape)) * self.dtype.itemsize


def open_lazy(path: str | Path) -> LazyVolume:
    """Open a ``.nii``, ``.nii.gz``, ``.tif``, ``.tiff`` or ``.ome.tif`` volume without reading it.

    Raises:
        DataError: Missing, unreadable or not a 3D volume (rules as in
            :func:`minivess.data.io.read_volume`).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "missing-file", "file does not exist")
    try:
        if volume_format(path) == "nifti":
            return _open_nifti(path)
        return _open_tiff(path)
    except DataError:
        raise
    except Exception as exc:  # nibabel and tifffile raise many types for broken files
        raise DataError(
            path, "corrupt-file", f"cannot read volume ({type(exc).__name__}: {exc})"
        ) from exc


def _three_d(shape: tuple[int, ...], path: Path) -> tuple[int, int, int]:
    """The (H, W, D) shape, dropping trailing singleton axes; a DataError if not 3D."""
    dims = list(shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) != 3 or min(dims) < 1:
        raise DataError(path, "dimensionality", f"expected a 3D volume, got shape {shape}")
    return dims[0], dims[1], dims[2]


def _open_nifti(path: Path) -> LazyVolume:
    img = cast(Any, nib.load(str(path)))
    proxy = img.dataobj
    shape = _three_d(tuple(proxy.shape), path)
    extra = (0,) * (len(proxy.shape) - 3)
    zooms = img.header.get_zooms()[:3]
    if not all(np.isfinite(z) and z > 0 for z in zooms):
        raise DataError(path, "spacing", f"voxel spacing must be positive, got {zooms}")
    header = nib.Nifti1Header()
    if isinstance(img.header, nib.Nifti1Header):
        header = img.header.copy()
    else:
        header.set_qform(img.affine, code=1)
        header.set_sform(img.affine, code=1)
        header.set_xyzt_units(*img.header.get_xyzt_units())
    dtype = np.dtype(proxy.dtype)
    return LazyVolume(path, shape, dtype, header, lambda box: proxy[(*box, *extra)])


def _open_tiff(path: Path) -> LazyVolume:
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        zyx = tuple(d for i, d in enumerate(series.shape) if d != 1 or i >= len(series.shape) - 3)
        spacing = parse_ome_spacing(tif.ome_metadata) if tif.is_ome and tif.ome_metadata else None
        dtype = np.dtype(series.dtype)
        pages = len(tif.pages)
    if len(zyx) != 3 or pages != zyx[0]:
        raise DataError(
            path, "dimensionality", f"expected a 3D (Z, Y, X) stack of pages, got {series.shape}"
        )
    header = nib.Nifti1Header()
    affine = affine_from_spacing(spacing or (1.0, 1.0, 1.0))
    header.set_xyzt_units(xyz="micron")
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)

    def read(box: Box) -> np.ndarray:
        h, w, d = box
        with tifffile.TiffFile(path) as tif:
            pages = [tif.pages[z].asarray()[w, h].T for z in range(d.start, d.stop)]
        return np.stack(pages, axis=-1)

    return LazyVolume(path, (zyx[2], zyx[1], zyx[0]), dtype, header, read)


@contextmanager
def nifti_memmap(
    final: str | Path, shape: tuple[int, int, int], dtype: np.dtype | type, like: LazyVolume
) -> Iterator[np.memmap]:
    """A writable memory map of a new uncompressed NIfTI on ``like``'s grid, renamed into place.

    The file is preallocated sparse beside ``final`` and renamed to ``final`` only when the
    block exits without an exception, so a failed prediction leaves no partial output.

    Args:
        final: Destination ``.nii`` file.
        shape: Its (H, W, D) shape (``like.shape``).
        dtype: Voxel dtype on disk.
        like: The volume whose geometry the file carries.

    Yields:
        The voxels, (H, W, D) in NIfTI's Fortran order, initialised to zero.
    """
    if not str(final).lower().endswith(".nii"):
        raise DataError(final, "file-type", "a memory-mapped output must be an uncompressed .nii")
    header = like.header.copy()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_slope_inter(1.0, 0.0)
    header["magic"] = b"n+1"
    header.set_data_offset(_SINGLE_FILE_OFFSET)
    disk_dtype = header.get_data_dtype()
    with atomic_path(final) as tmp:
        with tmp.open("wb") as fh:
            fh.write(header.binaryblock)
            fh.write(b"\x00" * (_SINGLE_FILE_OFFSET - len(header.binaryblock)))
            fh.truncate(_SINGLE_FILE_OFFSET + int(np.prod(shape)) * disk_dtype.itemsize)
        array = np.memmap(
            tmp, dtype=disk_dtype, mode="r+", offset=_SINGLE_FILE_OFFSET, shape=shape, order="F"
        )
        try:
            yield array
            array.flush()
        finally:
            del array


def drop_pages(array: np.memmap) -> None:
    """Write ``array``'s dirty pages to its file and drop all its pages from resident memory.

    Pages of a shared file mapping that the process wrote stay resident (and count in its RSS)
    until unmapped; after a flush, ``MADV_DONTNEED`` releases them and the next access reads
    them back from the file. Where ``madvise`` is missing (Windows), only the flush happens.
    """
    array.flush()
    mapped = getattr(array, "_mmap", None)
    if mapped is not None and hasattr(mapped, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mapped.madvise(mmap.MADV_DONTNEED)
