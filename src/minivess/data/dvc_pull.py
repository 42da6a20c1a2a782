"""``dvc pull`` that resumes after a kill, verifies what it checked out and fails in one line.

DVC writes every file it fetches or checks out to a hidden ``.<random>.tmp`` beside the target
and renames it into place, so a killed pull never leaves a corrupt file under a final name.
It does leave those partial copies behind: in the cache (wasted space) and inside the output
folders, where the next ``dvc pull`` refuses to run without ``--force`` because they are files
it has not saved. :func:`pull` removes exactly those partial copies, holding DVC's repository
lock so that no running DVC process loses a file it is writing, then pulls through DVC's Python
API (whose exception classes tell the failures apart) and finally hashes every pulled file
against the md5 DVC records, pulling a file again if it or its cache copy was damaged.

A cache outside the repository (``dvc cache dir``) may be shared with other repositories, whose
DVC processes this lock does not stop, so it is not cleaned: delete its stale
``.<random>.tmp`` files by hand while no DVC process uses it.

Example:
    >>> report = pull(".")  # doctest: +SKIP
    >>> report.verified_files  # doctest: +SKIP
    12
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minivess.errors import ConfigError, DataError, first_line

PARTIAL_NAME = re.compile(r"^\.[A-Za-z0-9_-]{22}\.tmp$")
"""Name of DVC's partial copies: ``dvc_objects.fs.utils.tmp_fname()`` with no prefix, i.e.
``"." + secrets.token_urlsafe(16) + ".tmp"`` (22 URL-safe characters)."""

SETTINGS_REMOTE = "minivess-settings"
"""Name given to the remote taken from ``settings.dvc.remote`` (it is not written anywhere)."""

_DVC_LOGGERS = ("dvc", "dvc_data", "dvc_objects")
_LOCAL_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
"""Errors of writing the cache or the workspace (a remote is only read)."""
_SQLITE_WRITE_ERRORS = {"disk I/O error", "database or disk is full"}
"""What SQLite says when DVC's index or state database cannot grow."""
_CORRUPT_MSG = "corrupted cache file '%s'."
_MISSING_MSG = "Some of the cache files do not exist neither locally nor on remote"


@dataclass(frozen=True)
class PullReport:
    """What :func:`pull` did.

    Attributes:
        root: Root of the DVC repository.
        remote: The remote pulled from, as ``name (url)``.
        fetched: Objects downloaded into the cache.
        added: Files or outputs checked out that were absent.
        modified: Files or outputs checked out that differed.
        reclaimed_files: Partial copies of an interrupted pull that were removed first.
        reclaimed_bytes: Their size in bytes.
        verified_files: Files hashed against DVC's records after the pull (0 without verify).
        verified_bytes: Their size in bytes.
        repaired_files: Files that did not match their record after the pull and were pulled
            again (with their cache copy, where that was damaged too).
    """

    root: Path
    remote: str
    fetched: int
    added: int
    modified: int
    reclaimed_files: int
    reclaimed_bytes: int
    verified_files: int
    verified_bytes: int
    repaired_files: int


def find_partials(folders: Iterable[Path]) -> list[Path]:
    """DVC's partial copies (:data:`PARTIAL_NAME`) anywhere under ``folders``.

    Args:
        folders: Folders to search; missing ones are skipped.

    Returns:
        The partial copies, sorted.
    """
    found: set[Path] = set()
    for folder in folders:
        for parent, _, names in os.walk(folder):
            found.update(Path(parent) / name for name in names if PARTIAL_NAME.match(name))
    return sorted(found)


def remove_partials(folders: Iterable[Path]) -> tuple[int, int]:
    """Delete DVC's partial copies under ``folders``.

    Args:
        folders: The cache and the DVC-tracked output folders.

    Returns:
        Number of files removed and their total size in bytes.
    """
    count = size = 0
    for path in find_partials(folders):
        try:
            size += path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        count += 1
    return count, size


def pull(
    path: str | Path = ".",
    *,
    remote: str | None = None,
    remote_url: str | None = None,
    verify: bool = True,
) -> PullReport:
    """Pull every DVC-tracked output of the repository that holds ``path``.

    Args:
        path: The repository root or any folder inside it.
        remote: Name of a remote in ``.dvc/config``; ``None`` uses ``remote_url`` or the default.
        remote_url: URL or folder of a remote to use when ``remote`` is ``None`` (the
            ``dvc.remote`` deployment setting); downloads from it are hash-checked.
        verify: Hash every pulled file against the md5 DVC records; a file that differs is
            deleted, with its cache copy where that is damaged too, and pulled once more.

    Returns:
        What was cleaned, pulled and verified.

    Raises:
        ConfigError: Not a DVC repository, no remote, an unknown remote name, or the repository
            locked by another DVC process.
        DataError: Nothing tracked; a remote object missing, damaged or unreachable; a file in
            an output that DVC did not save; a file that still differs from its record after being
            pulled again.
    """
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo, lock_repo

    config = None
    if remote is None and remote_url is not None:
        config = {
            "core": {"remote": SETTINGS_REMOTE},
            "remote": {SETTINGS_REMOTE: {"url": remote_url, "verify": True}},
        }
    try:
        repo = Repo(os.fspath(path), config=config)
    except NotDvcRepoError:
        raise ConfigError(
            f"{Path(path).resolve()} is not inside a DVC repository: run the command in the "
            "project (the folder holding .dvc/) or pass --repo PATH"
        ) from None
    with repo, _captured_dvc_logs() as records:
        root = Path(repo.root_dir)
        outs = [out for out in repo.index.outs if out.use_cache and out.hash_info]
        if not outs:
            raise DataError(
                root,
                "nothing-to-pull",
                "no DVC-tracked data in this repository (no .dvc file or dvc.lock output): "
                "track data with `dvc add` or `dvc repro`, then `dvc push`",
            )
        name = _remote_name(repo, remote)
        where = f"{name} ({repo.config['remote'][name].get('url')})"
        try:
            with lock_repo(repo):
                folders = _out_folders(outs)
                cache = Path(repo.cache.local_cache_dir).resolve()
                if cache.is_relative_to(root.resolve()):  # a shared cache may be in use
                    folders.append(cache)
                reclaimed, reclaimed_bytes = remove_partials(folders)
                # DVC's index of its cache (an SQLite file) can be left claiming objects that a
                # failed pull never wrote; the next pull then skips them and fails to check out.
                repo.drop_data_index()
                result = repo.pull(remote=remote)
                stats = result["stats"]
                checked = _verify_and_repair(repo, remote) if verify else (0, 0, 0)
        except Exception as exc:
            _raise_user_error(exc, repo, name, where, records)
            raise
    return PullReport(
        root=root,
        remote=where,
        fetched=int(stats.get("fetched", 0)),
        added=int(stats.get("added", 0)),
        modified=int(stats.get("modified", 0)),
        reclaimed_files=reclaimed,
        reclaimed_bytes=reclaimed_bytes,
        verified_files=checked[0],
        verified_bytes=checked[1],
        repaired_files=checked[2],
    )


@dataclass(frozen=True)
class Mismatch:
    """A tracked file that is missing or does not hash to the md5 DVC records.

    Attributes:
        path: The file in the workspace.
        cached: The cache object it was checked out from.
        cache_damaged: The cache object is missing or does not hash to its name either.
    """

    path: Path
    cached: Path
    cache_damaged: bool


def check_outputs(repo: Any) -> tuple[int, int, list[Mismatch]]:
    """Hash every file of the repository's cached outputs against the md5 DVC records.

    DVC itself trusts a checked-out file whose size and mtime it has seen before, and a cache
    object it has once verified, so neither ``dvc status`` nor ``dvc pull`` notices bytes that
    change on disk later; this reads every byte.

    Args:
        repo: An open ``dvc.repo.Repo`` whose outputs are checked out.

    Returns:
        Number of matching files, their total size in bytes, and the files that do not match.
    """
    from dvc_data.hashfile.hash import file_md5

    count = size = 0
    bad = []
    for path, hash_info, cached in _tracked_files(repo):
        if path.is_file() and file_md5(os.fspath(path), name=hash_info.name) == hash_info.value:
            count += 1
            size += path.stat().st_size
            continue
        damaged = not cached.is_file() or (
            file_md5(os.fspath(cached), name=hash_info.name) != hash_info.value
        )
        bad.append(Mismatch(path, cached, damaged))
    return count, size, bad


def _verify_and_repair(repo: Any, remote: str | None) -> tuple[int, int, int]:
    """Check the pulled files; drop bad ones (and damaged cache copies) and pull them once more.

    Returns:
        Number of verified files, their size in bytes, and how many files were pulled again.

    Raises:
        DataError: A file still differs from its record after the second pull.
    """
    _, _, bad = check_outputs(repo)
    for mismatch in bad:
        mismatch.path.unlink(missing_ok=True)
        if mismatch.cache_damaged:
            mismatch.cached.unlink(missing_ok=True)
    if bad:
        repo.pull(remote=remote)
    count, size, still = check_outputs(repo)
    if still:
        raise DataError(
            still[0].path,
            "checksum-mismatch",
            f"differs from the md5 DVC records even after pulling it again ({len(still)} "
            "file(s)): the disk may be failing; check it, then delete the file and "
            f"{still[0].cached} and pull again",
        )
    return count, size, len(bad)


def _tracked_files(repo: Any) -> Iterator[tuple[Path, Any, Path]]:
    """Every file of the cached outputs with its recorded hash (``HashInfo``) and cache path."""
    for out in repo.index.outs:
        if not (out.use_cache and out.hash_info):
            continue
        if not out.hash_info.isdir:
            yield Path(out.fs_path), out.hash_info, Path(out.cache.oid_to_path(out.hash_info.value))
            continue
        tree = out.get_obj()
        if tree is None:
            raise DataError(out.fs_path, "missing-after-pull", "its listing is not in the cache")
        for key, _, hash_info in tree:
            yield Path(out.fs_path, *key), hash_info, Path(out.cache.oid_to_path(hash_info.value))


def _out_folders(outs: Iterable[Any]) -> list[Path]:
    """Folders where DVC checks the outputs out: a directory output, or a file's parent.

    A file output's parent is searched only one level deep: that is where DVC puts its copy.
    """
    folders = []
    for out in outs:
        target = Path(out.fs_path)
        folders.append(target if out.hash_info.isdir else target.parent)
    return folders


def _remote_name(repo: Any, remote: str | None) -> str:
    known = sorted(repo.config["remote"])
    name = remote or repo.config["core"].get("remote")
    if not name:
        raise ConfigError(
            "no DVC remote to pull from: set a default with `dvc remote add -d NAME URL`, pass "
            "--remote NAME, or set MINIVESS_DVC__REMOTE=URL"
            + (f" (remotes in .dvc/config: {', '.join(known)})" if known else "")
        )
    if name not in repo.config["remote"]:
        raise ConfigError(
            f"no DVC remote named {name!r}; known: {', '.join(known) or 'none'} "
            "(add it with `dvc remote add NAME URL`)"
        )
    return str(name)


def _raise_user_error(
    exc: Exception, repo: Any, name: str, where: str, records: list[logging.LogRecord]
) -> None:
    """Re-raise a DVC failure as a one-line :class:`~minivess.errors.MinivessError`."""
    from dvc.exceptions import CheckoutError, DownloadError, DvcException
    from dvc.lock import LockError

    if isinstance(exc, LockError):
        raise ConfigError(
            f"another DVC process holds the lock of {repo.root_dir}: wait for it to finish "
            "(a killed one releases it when it dies)"
        ) from None
    if isinstance(exc, sqlite3.OperationalError) and str(exc) in _SQLITE_WRITE_ERRORS:
        raise DataError(
            repo.site_cache_dir,
            "cannot-write",
            f"DVC's index database failed ({exc}): free disk space (or raise the quota or file "
            "size limit), then pull again",
        ) from None
    corrupt = [arg for r in records if r.msg == _CORRUPT_MSG and (arg := _first_arg(r))]
    if isinstance(exc, CheckoutError) and corrupt:
        names = _names_of_objects(repo, {_oid_of(path) for path in corrupt}, name)
        raise DataError(
            names[0] if names else corrupt[0],
            "corrupt-remote-object",
            f"the copy in remote {where} is damaged (its md5 does not match, so DVC deleted the "
            f"download and checked out nothing of {', '.join(map(str, exc.target_infos))}): "
            "push it again from an intact copy (`dvc push` where the data is good), then pull",
        ) from None
    if isinstance(exc, DownloadError | CheckoutError):
        _raise_transfer_error(repo, name, where, records)
    if isinstance(exc, DvcException) and "unsaved files" in str(exc):
        lines = str(exc).splitlines()
        raise DataError(
            lines[1] if len(lines) > 1 else None,
            "unsaved-file",
            "is inside a DVC output but not tracked by DVC: move it out of the folder "
            "(or `dvc add` the folder to keep it), then pull",
        ) from None
    if isinstance(exc, DvcException):
        raise DataError(repo.root_dir, "dvc-pull", f"dvc pull failed: {first_line(exc)}") from None


def _raise_transfer_error(
    repo: Any, name: str, where: str, records: list[logging.LogRecord]
) -> None:
    """A download or checkout that failed because the remote lacks data or cannot be read."""
    causes = [r.exc_info[1] for r in records if r.exc_info and r.exc_info[1] is not None]
    full = [c for c in causes if isinstance(c, OSError) and c.errno in _LOCAL_WRITE_ERRNOS]
    if full:
        target = Path(full[0].filename2 or full[0].filename)
        raise DataError(
            target.parent if PARTIAL_NAME.match(target.name) else target,
            "cannot-write",
            f"{full[0].strerror}: free disk space (or raise the quota or file size limit, or "
            "make the file system writable), then pull again (the next pull removes the "
            "partial copy this one left)",
        ) from None
    unreachable = [c for c in causes if not isinstance(c, FileNotFoundError)]
    if unreachable:
        raise DataError(
            None,
            "remote-unreachable",
            f"cannot read remote {where}: {first_line(unreachable[0])}; start the remote or fix "
            "its URL, endpoint or credentials (`dvc remote list`, .dvc/config.local), then pull",
        ) from None
    missing_oids = {
        arg for r in records if r.levelno >= logging.ERROR and r.exc_info and (arg := _first_arg(r))
    }
    missing_logged = [r for r in records if r.getMessage().startswith(_MISSING_MSG)]
    if not (missing_oids or missing_logged or causes):
        return
    names = _names_of_objects(repo, missing_oids, name) if missing_oids else []
    what = f"{len(names)} file(s) missing" if names else "the data is missing"
    raise DataError(
        names[0] if names else None,
        "remote-missing",
        f"{what} from remote {where} (folder or bucket absent, or never pushed to): run "
        "`dvc push` where the data is, or pick the right remote with --remote NAME, then pull",
    ) from None


def _listing(repo: Any, out: Any, remote: str) -> Any:
    """The file listing (``Tree``) of a directory output, from the cache or else the remote.

    DVC stores the listing in the cache only once every file of it has arrived.
    """
    from dvc_data.hashfile.tree import Tree

    tree = out.get_obj()
    if tree is not None:
        return tree
    try:
        odb = repo.cloud.get_remote_odb(remote, hash_name=out.hash_name)
        return Tree.load(odb, out.hash_info)
    except Exception:  # only used to name files in an error already being reported
        return None


def _first_arg(record: logging.LogRecord) -> str | None:
    """The first ``%s`` argument of a log record (DVC logs paths and md5s that way)."""
    args = record.args
    return str(args[0]) if isinstance(args, tuple) and args else None


def _oid_of(cache_path: str) -> str:
    """The md5 a cache object is named after (``.../ab/cdef...`` -> ``abcdef...``)."""
    path = Path(cache_path)
    return path.parent.name + path.name.removesuffix(".dir")


def _names_of_objects(repo: Any, oids: set[str], remote: str) -> list[Path]:
    """Workspace paths (relative to the repository) of the tracked files with these md5s."""
    names = []
    for out in repo.index.outs:
        hash_info = out.hash_info
        if not (out.use_cache and hash_info):
            continue
        relout = Path(os.path.relpath(out.fs_path, repo.root_dir))
        if hash_info.value.removesuffix(".dir") in oids:
            names.append(relout)
        tree = _listing(repo, out, remote) if hash_info.isdir else None
        if tree is not None:
            names.extend(relout.joinpath(*key) for key, _, entry in tree if entry.value in oids)
    return sorted(names)


class _Collect(logging.Handler):
    """Keeps warnings, errors and the debug line naming a corrupt download."""

    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING or record.msg == _CORRUPT_MSG:
            self.records.append(record)


@contextmanager
def _captured_dvc_logs() -> Iterator[list[logging.LogRecord]]:
    """Collect DVC's log records instead of printing them (DVC logs multi-line errors itself)."""
    records: list[logging.LogRecord] = []
    saved = []
    for name in _DVC_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.level, logger.propagate))
        logger.handlers = [_Collect(records)]
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    try:
        yield records
    finally:
        for logger, handlers, level, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)
