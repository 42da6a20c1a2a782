"""Keep tracking calls that could not reach MLflow on disk, in order, and deliver them later.

A tracking server that goes away must not stop training. :class:`TrackingSpool` wraps every
call a run makes (metrics, tags, artifacts, the final status): while the store answers, a call
goes straight through; once a call fails because the store is unreachable, it and every later
call are appended to ``pending.jsonl`` in the spool folder (the run folder's
``tracking-spool/``), the user is warned once, and delivery is retried at most every
``retry_interval_s`` seconds and always when the run ends. What is still pending at the end stays
on disk; ``minivess runs sync RUN_DIR`` delivers it. Delivery is at least once: a record whose
request reached the server but whose answer was lost may be logged twice.

Example:
    >>> spool = TrackingSpool(run_dir / "tracking-spool", run_id, uri)  # doctest: +SKIP
    >>> spool.submit({"kind": "metrics", "step": 3, "timestamp": t, "metrics": {"loss": 0.4}},
    ...              deliverer(client, run_id))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from minivess.data.io import atomic_path
from minivess.errors import MinivessError

logger = logging.getLogger("minivess.tracking")

SPOOL_DIR = "tracking-spool"
"""Folder of a run directory that holds undelivered tracking calls."""
PENDING_FILE = "pending.jsonl"
RUN_FILE = "run.json"
FILES_DIR = "files"
QUICK_TIMEOUT_S = 5
"""Seconds one tracking request may take while spooling (no retries: the spool retries)."""

Record = dict[str, Any]
Deliver = Callable[[Record], None]

# Errors the store answers about the request itself: retrying cannot help, so they surface.
_PERMANENT_CODES = frozenset(
    {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE", "BAD_REQUEST"}
)


class TrackingSpool:
    """Deliver tracking records in order, keeping those the store could not take on disk.

    Args:
        directory: Spool folder (created on first use), e.g. ``<run_dir>/tracking-spool``.
        run_id: The MLflow run the records belong to.
        uri: The tracking URI they were meant for (what ``minivess runs sync`` reuses).
        retry_interval_s: Least time between two delivery attempts while records are pending.
    """

    def __init__(
        self, directory: str | Path, run_id: str, uri: str, *, retry_interval_s: float = 10.0
    ) -> None:
        self.directory = Path(directory)
        self.run_id = run_id
        self.uri = uri
        self.retry_interval_s = retry_interval_s
        self._last_failure: float | None = None
        self._warned = False

    @property
    def pending_file(self) -> Path:
        """The JSON-lines file of undelivered records, oldest first."""
        return self.directory / PENDING_FILE

    def pending(self) -> list[Record]:
        """Undelivered records, oldest first (a line cut short by a kill is skipped)."""
        return read_pending(self.directory)

    def submit(self, record: Record, deliver: Deliver) -> bool:
        """Deliver ``record`` now, or keep it (behind any older pending records).

        Args:
            record: A JSON-serialisable record (see :func:`deliverer` for the kinds).
            deliver: Sends one record to the store; raises if the store is unreachable.

        Returns:
            Whether the record reached the store.

        Raises:
            Exception: Whatever ``deliver`` raised for a request the store refused for a
                reason retrying cannot fix (e.g. an invalid metric name).
        """
        if self._try(record, deliver):
            return True
        self._append(record)
        return False

    def submit_file(self, path: str | Path, artifact_path: str | None, deliver: Deliver) -> bool:
        """Upload the file ``path`` as an artifact now, or keep a copy of it for later.

        The caller may delete ``path`` as soon as this returns.

        Returns:
            Whether the file reached the store.
        """
        record: Record = {"kind": "artifact", "file": str(path), "artifact_path": artifact_path}
        if self._try(record, deliver):
            return True
        kept = self.keep_file(Path(path))
        self._append({**record, "file": str(kept), "owned": True})
        return False

    def _try(self, record: Record, deliver: Deliver) -> bool:
        """Deliver ``record`` if nothing older is pending; on an outage note it and say no."""
        if self.pending_file.is_file() and not self.flush(deliver):
            return False
        try:
            with quick_http():
                deliver(record)
        except Exception as exc:
            if is_permanent(exc):
                raise
            self._on_failure(exc)
            return False
        return True

    def flush(self, deliver: Deliver, *, force: bool = False) -> bool:
        """Try to deliver every pending record, oldest first.

        Args:
            deliver: As for :meth:`submit`.
            force: Try even if the last failure was less than ``retry_interval_s`` ago.

        Returns:
            Whether nothing is pending any more.
        """
        records = self.pending()
        if not records:
            return True
        waited = time.monotonic() - (self._last_failure or 0.0)
        if not force and self._last_failure is not None and waited < self.retry_interval_s:
            return False
        sent = 0
        try:
            with quick_http():
                for record in records:
                    deliver(record)
                    sent += 1
        except Exception as exc:
            if is_permanent(exc):
                raise
            self._on_failure(exc)
            self._rewrite(records[sent:])
            return False
        self._rewrite([])
        logger.warning(
            "tracking store %s reachable again: delivered %d buffered records", self.uri, sent
        )
        self._last_failure = None
        return True

    def keep_file(self, source: Path) -> Path:
        """A copy of ``source`` inside the spool, for an artifact record that must outlive it."""
        folder = self.directory / FILES_DIR / str(time.time_ns())  # keeps the file's own name
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / source.name
        shutil.copyfile(source, target)
        return target

    def _on_failure(self, exc: BaseException) -> None:
        self._last_failure = time.monotonic()
        if not self._warned:
            self._warned = True
            logger.warning(
                "tracking store %s unreachable (%s): training goes on; metrics and artifacts are "
                "kept in %s and delivered when it answers again (or with `minivess runs sync`)",
                self.uri,
                _gist(exc),
                self.directory,
            )

    def _append(self, record: Record) -> None:
        self._write_run_file()
        with self.pending_file.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, allow_nan=True) + "\n")
            fh.flush()

    def _rewrite(self, records: list[Record]) -> None:
        if not records:
            self.pending_file.unlink(missing_ok=True)
            return
        with atomic_path(self.pending_file) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")

    def _write_run_file(self) -> None:
        run_file = self.directory / RUN_FILE
        if not run_file.is_file():
            self.directory.mkdir(parents=True, exist_ok=True)
            run_file.write_text(json.dumps({"run_id": self.run_id, "uri": self.uri}), "utf-8")


def read_pending(directory: Path) -> list[Record]:
    """The records kept in a spool folder; a last line cut short by a kill is ignored."""
    path = Path(directory) / PENDING_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def deliverer(client: Any, run_id: str) -> Deliver:
    """A function sending one record of the spool to ``run_id`` through an ``MlflowClient``.

    Record kinds: ``metrics`` (``step``, ``timestamp`` in ms, ``metrics``), ``tags``
    (``tags``), ``artifact`` (``file``, ``artifact_path``, ``owned``: delete the file once
    sent) and ``end`` (``status``).
    """
    from mlflow.entities import Metric, RunTag

    def deliver(record: Record) -> None:
        kind = record["kind"]
        if kind == "metrics":
            step, stamp = int(record["step"]), int(record["timestamp"])
            batch = [Metric(k, float(v), stamp, step) for k, v in record["metrics"].items()]
            client.log_batch(run_id, metrics=batch, synchronous=True)
        elif kind == "tags":
            tags = [RunTag(k, str(v)) for k, v in record["tags"].items()]
            client.log_batch(run_id, tags=tags, synchronous=True)
        elif kind == "artifact":
            client.log_artifact(run_id, record["file"], record.get("artifact_path"))
            if record.get("owned"):
                kept = Path(record["file"])
                kept.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    kept.parent.rmdir()
        elif kind == "end":
            client.set_terminated(run_id, record["status"])
        else:
            raise MinivessError(f"unknown tracking record kind {kind!r} in the spool")

    return deliver


def sync_spool(directory: str | Path, uri: str | None = None) -> int:
    """Deliver everything kept in a spool folder; returns how many records were sent.

    Args:
        directory: A run's ``tracking-spool`` folder (or the run folder holding it).
        uri: Tracking URI to deliver to; default: the one the run was logging to.

    Raises:
        MinivessError: ``directory`` is not a folder, or the store is still unreachable
            (nothing is lost).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise MinivessError(f"{directory} is not a folder: pass a run folder (runs/<name>/<time>)")
    if directory.name != SPOOL_DIR:
        directory = directory / SPOOL_DIR
    run_file = directory / RUN_FILE
    if not run_file.is_file():
        return 0  # the store took every call: nothing was kept
    meta = json.loads(run_file.read_text(encoding="utf-8"))
    from minivess.tracking.setup import configure_tracking, import_mlflow

    target = configure_tracking(uri or meta["uri"])
    spool = TrackingSpool(directory, meta["run_id"], target)
    count = len(spool.pending())
    client = import_mlflow().MlflowClient(tracking_uri=target)
    if not spool.flush(deliverer(client, meta["run_id"]), force=True):
        left = len(spool.pending())
        raise MinivessError(
            f"tracking store {target} still unreachable: {left} records kept in {directory}"
        )
    return count


def is_permanent(exc: BaseException) -> bool:
    """Whether the store refused a request for a reason that retrying cannot fix."""
    return getattr(exc, "error_code", None) in _PERMANENT_CODES


@contextmanager
def quick_http() -> Iterator[None]:
    """MLflow HTTP requests without retries and with a short timeout, inside the block.

    MLflow's defaults retry a dead server for about two minutes per call, which would stall
    training; the spool does the retrying instead.
    """
    from minivess.tracking.setup import http_settings

    with http_settings(max_retries=0, timeout_s=QUICK_TIMEOUT_S):
        yield


def _gist(exc: BaseException) -> str:
    text = str(exc)
    if "Connection refused" in text or "NewConnectionError" in text:
        return "connection refused"
    if "timed out" in text or "ReadTimeout" in text:
        return "no answer"
    return text.strip().splitlines()[0][:160] if text.strip() else type(exc).__name__
