"""Download the VesselNN dataset at a pinned commit, verified against a manifest, resumably.

Files land in the upstream layout (``denoised/``, ``labels/``, ``metadata/``) so
:class:`~minivess.data.sources.vesselnn.VesselNNSource` reads the destination directly.
A file appears under its final name only after its size and SHA-256 match the manifest; until
then it lives in ``<file>.part``, which a later run continues with an HTTP Range request.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from minivess.errors import ConfigError, DataError

# Provenance: github.com/petteriTeikari/vesselNN_dataset (MIT licence), pinned to the commit whose
# files were hashed into vesselnn_manifest.tsv (path, bytes, sha256 of the nine usable
# image/label pairs and their OME-XML metadata). Moving the pin means regenerating the manifest.
VESSELNN_REPO = "petteriTeikari/vesselNN_dataset"
VESSELNN_COMMIT = "0925564766f7fd658a792a8e26ebefa50f8844ac"
DEFAULT_BASE_URL = f"https://raw.githubusercontent.com/{VESSELNN_REPO}/{VESSELNN_COMMIT}"

_MANIFEST_RESOURCE = ("data", "vesselnn_manifest.tsv")
_IMAGE_SUFFIX = "_BM4D_denoised.tif"
_CHUNK = 1 << 16
#: Seconds to wait before each retry: a dropped connection is retried at once, then with backoff.
_RETRY_DELAYS_S = (0.0, 1.0, 4.0, 10.0)
#: Transient failures worth retrying; anything else (404, bad URL) fails at once.
_TRANSIENT = (ConnectionError, TimeoutError, http.client.HTTPException, urllib.error.URLError)

#: ``progress(path, done_bytes, total_bytes)``, called as bytes arrive and once per skipped file.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ManifestEntry:
    """One upstream file: its path in the layout, size in bytes, SHA-256 and the case it serves."""

    path: str
    size: int
    sha256: str
    case_id: str


def vesselnn_manifest() -> list[ManifestEntry]:
    """Every file of the nine usable VesselNN pairs at :data:`VESSELNN_COMMIT`, in manifest order.

    Example:
        >>> sorted({e.case_id for e in vesselnn_manifest()})[:2]
        ['burgess2014_bbbDisruption', 'burgess2014_lowerRes_hiSNR']
    """
    text = files("minivess").joinpath(*_MANIFEST_RESOURCE).read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines()[1:] if line.strip()]
    names = [Path(path).name[: -len(_IMAGE_SUFFIX)] for path, _, _ in rows if _is_image(path)]
    by_length = sorted(names, key=len, reverse=True)
    return [
        ManifestEntry(
            path, int(size), sha, next(n for n in by_length if Path(path).name.startswith(n + "_"))
        )
        for path, size, sha in rows
    ]


def _is_image(path: str) -> bool:
    return path.startswith("denoised/") and path.endswith(_IMAGE_SUFFIX)


def _select(names: Iterable[str] | None) -> list[ManifestEntry]:
    entries = vesselnn_manifest()
    if names is None:
        return entries
    wanted = set(names)
    known = {e.case_id for e in entries}
    if unknown := sorted(wanted - known):
        valid = ", ".join(sorted(known))
        raise ConfigError(f"unknown VesselNN case(s) {', '.join(unknown)}; valid names: {valid}")
    return [e for e in entries if e.case_id in wanted]


def download_vesselnn(
    dest: str | Path,
    *,
    base_url: str = DEFAULT_BASE_URL,
    names: Iterable[str] | None = None,
    progress: Progress | None = None,
    timeout: float = 30.0,
    retries: int = 3,
) -> list[Path]:
    """Fetch the VesselNN pairs into ``dest`` (upstream layout), verifying every file.

    Files already present with the right size and hash are skipped without a request.
    Interrupted downloads continue from ``<file>.part``.

    Args:
        dest: Destination folder; created if missing.
        base_url: URL prefix the manifest paths are appended to (the pinned GitHub commit).
        names: Case NAMEs to fetch (e.g. ``["poon2015_BBB_Leakage"]``); all nine if omitted.
        progress: Optional ``progress(path, done_bytes, total_bytes)`` callback.
        timeout: Seconds without data before a connection counts as dropped.
        retries: How many times a dropped or failed transfer is retried, resuming each time.

    Returns:
        The verified files under ``dest``, in manifest order.

    Raises:
        ConfigError: ``names`` holds a NAME the manifest does not know.
        DataError: A file could not be fetched after all retries (``download``; its ``.part``
            is kept for the next run), or its bytes do not match the manifest (``checksum``;
            nothing is kept). Every other file is still fetched before a checksum error is raised.

    Example:
        >>> download_vesselnn("data/vesselnn", names=["poon2015_BBB_Leakage"])  # doctest: +SKIP
    """
    dest = Path(dest)
    paths, failures = [], []
    for entry in _select(names):
        try:
            paths.append(_fetch(entry, dest, base_url, progress, timeout, retries))
        except DataError as exc:
            if exc.rule != "checksum":
                raise
            failures.append(exc)
    if failures:
        first = failures[0]
        others = "".join(f"; also {e.path}" for e in failures[1:])
        raise DataError(first.path, first.rule, first.message + others)
    return paths


def verify_vesselnn(dest: str | Path, names: Iterable[str] | None = None) -> list[str]:
    """What is missing or wrong in a VesselNN folder compared with the manifest.

    Args:
        dest: A folder in the upstream layout.
        names: Case NAMEs to check; all nine if omitted.

    Returns:
        One line per missing, wrong-sized or wrong-hash file; empty when all match.
    """
    problems = []
    for entry in _select(names):
        path = Path(dest) / entry.path
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif (size := path.stat().st_size) != entry.size:
            problems.append(f"{path}: {size} bytes, expected {entry.size}")
        elif (digest := _sha256(path)) != entry.sha256:
            problems.append(f"{path}: sha256 {digest}, expected {entry.sha256}")
    return problems


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _is_verified(path: Path, entry: ManifestEntry) -> bool:
    """Size first (free), hash only when the size matches."""
    return path.is_file() and path.stat().st_size == entry.size and _sha256(path) == entry.sha256


def _fetch(
    entry: ManifestEntry,
    dest: Path,
    base_url: str,
    progress: Progress | None,
    timeout: float,
    retries: int,
) -> Path:
    """Make ``dest/entry.path`` a verified copy of the upstream file."""
    final = dest / entry.path
    report = progress or (lambda _path, _done, _total: None)
    if _is_verified(final, entry):
        report(entry.path, entry.size, entry.size)
        return final
    final.unlink(missing_ok=True)  # a stale or corrupt copy must not pass for the real file
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    url = f"{base_url.rstrip('/')}/{urllib.parse.quote(entry.path)}"
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, entry, report, timeout)
            break
        except _TRANSIENT as exc:
            if attempt == retries or _is_permanent(exc):
                kept = part.stat().st_size if part.exists() else 0
                raise DataError(
                    final,
                    "download",
                    f"cannot fetch {url} after {attempt + 1} attempt(s) ({exc}); run again to "
                    f"resume from the {kept} bytes kept in {part.name}",
                ) from exc
            time.sleep(_RETRY_DELAYS_S[min(attempt, len(_RETRY_DELAYS_S) - 1)])
    _verify_part(part, final, entry)
    os.replace(part, final)
    return final


def _is_permanent(exc: Exception) -> bool:
    """HTTP 4xx answers will not change on retry, except timeouts, rate limits and a bad Range."""
    if not isinstance(exc, urllib.error.HTTPError):
        return False
    return 400 <= exc.code < 500 and exc.code not in {408, 416, 429}


def _transfer(url: str, part: Path, entry: ManifestEntry, report: Progress, timeout: float) -> None:
    """Append the missing bytes of ``url`` to ``part``; raise a transient error if cut short."""
    offset = part.stat().st_size if part.exists() else 0
    if offset > entry.size:  # not a prefix of this file: start over
        part.unlink()
        offset = 0
    if offset == entry.size:
        return
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:  # our .part no longer fits the remote file: start over
            part.unlink(missing_ok=True)
        raise
    with response:
        partial = response.status == 206
        if partial and _range_start(response) != offset:
            part.unlink(missing_ok=True)
            raise ConnectionError(f"server sent another byte range than {offset}-; restarting")
        # A server that ignores Range answers 200 with the whole file: start the .part over.
        mode, done = ("ab", offset) if partial else ("wb", 0)
        report(entry.path, done, entry.size)
        with part.open(mode) as f:
            while done <= entry.size and (block := response.read(_CHUNK)):
                f.write(block)
                done += len(block)
                report(entry.path, done, entry.size)
    if done < entry.size:  # the server closed the body early without saying so
        raise ConnectionError(f"connection closed after {done} of {entry.size} bytes")


def _range_start(response: http.client.HTTPResponse) -> int | None:
    """First byte of a 206 answer, from ``Content-Range: bytes START-END/TOTAL``."""
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _verify_part(part: Path, final: Path, entry: ManifestEntry) -> None:
    """Delete ``part`` and raise unless its size and SHA-256 match the manifest."""
    size, digest = part.stat().st_size, _sha256(part)
    if size == entry.size and digest == entry.sha256:
        return
    part.unlink()
    raise DataError(
        final,
        "checksum",
        f"downloaded file has sha256 {digest} ({size} bytes) but the manifest expects sha256 "
        f"{entry.sha256} ({entry.size} bytes); it was deleted. Run again to re-download; if it "
        "fails again, the server is not serving the pinned upstream file",
    )
