"""Reading single files out of zip archives safely (size caps against zip and gzip bombs)."""

from __future__ import annotations

import gzip
import zipfile
import zlib
from pathlib import Path
from typing import Any

from minivess.errors import DataError

#: Largest decompressed size accepted for one file inside a zip archive. MiniVess volumes are
#: tens of MB; the cap refuses gzip and zip bombs before they exhaust memory.
MAX_DECOMPRESSED_BYTES = 2 * 1024**3

_CHUNK = 1024 * 1024


def split_archive(location: str) -> tuple[Path, str] | None:
    """``(zip path, member)`` for an ``archive.zip!member`` location, else ``None``."""
    mark = location.lower().find(".zip!")
    if mark < 0:
        return None
    archive = Path(location[: mark + 4])
    return (archive, location[mark + 5 :]) if archive.is_file() else None


def read_member(archive: Path, member: str, limit: int) -> bytes:
    """Bytes of one zip member, gunzipped if it ends in ``.gz``, refusing more than ``limit``."""
    location = f"{archive}!{member}"
    try:
        with zipfile.ZipFile(archive) as zf:
            info = zf.getinfo(member)
            if info.file_size > limit:
                raise DataError(location, "too-large", f"expands to {info.file_size} bytes")
            with zf.open(info) as fh:
                if not member.lower().endswith(".gz"):
                    return fh.read()
                with gzip.GzipFile(fileobj=fh) as gz:
                    return _read_capped(gz, limit, location)
    except KeyError as exc:
        raise DataError(location, "missing-file", "no such file in the archive") from exc
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
        raise DataError(location, "corrupt-file", f"cannot decompress ({exc})") from exc


def _read_capped(stream: Any, limit: int, location: str) -> bytes:
    parts: list[bytes] = []
    total = 0
    while chunk := stream.read(_CHUNK):
        total += len(chunk)
        if total > limit:
            raise DataError(
                location,
                "too-large",
                f"decompresses to more than {limit} bytes; not a MiniVess volume (gzip bomb?)",
            )
        parts.append(chunk)
    return b"".join(parts)
