"""Drift of the served volumes against a reference, tested in the background of the service.

Each served volume is handed to :meth:`DriftMonitor.observe`, which only queues it: a thread
computes its feature rows (:func:`minivess.drift.volume_features`, one row per
``tile x tile x D`` crop), keeps the most recent ``window`` rows, and once it holds that many
runs :func:`minivess.drift.detect_drift` of those rows against the reference table. Requests
never wait for it and never fail because of it: a failure is logged and shown in
:meth:`DriftMonitor.status`. Volumes arriving while several are already queued are skipped
(and counted), which bounds the memory the queue holds.

The reference is a feature table as ``minivess drift`` writes it (``features_reference.csv``).
When it has the model columns (made with ``--model``), they are computed from the served
model's uncalibrated P(vessel), as ``minivess drift --model`` computes them.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from minivess.drift.features import MODEL_FEATURES, feature_columns, volume_features

if TYPE_CHECKING:
    import pandas as pd

    from minivess.data.volume import Volume
    from minivess.drift.report import DriftResult
    from minivess.uncertainty.calibration import Calibration

logger = logging.getLogger(__name__)

MAX_PENDING = 8
"""Volumes waiting for their features at most; more are skipped until the queue drains."""
OFF_MESSAGE = (
    "drift monitoring is off: set serve.drift_reference (MINIVESS_SERVE__DRIFT_REFERENCE, or "
    "minivess serve --drift-reference FILE) to a feature table of reference volumes, e.g. the "
    "features_reference.csv that `minivess drift -r <reference volumes> -c <volumes> -o DIR` "
    "writes, and restart the service"
)
DriftListener = Callable[[int, "DriftResult | None"], None]
"""Called with the rows in the window and the latest result after every update."""
_STOP = None


class DriftMonitor:
    """Rolling-window drift test of served volumes against a reference feature table.

    Args:
        reference: Feature table of the reference volumes (at least two rows).
        source: Where the table came from, for :meth:`status`.
        window: Most recent feature rows tested; no verdict before this many.
        tile: Crop side of one row (the ``--tile`` of the reference).
        calibration: The served model's calibration, undone for the model features.
        listener: Called after each update (e.g. to set Prometheus gauges); must not raise.
        max_pending: Volumes queued at most.
    """

    def __init__(
        self,
        reference: pd.DataFrame,
        *,
        source: str | Path,
        window: int,
        tile: int,
        calibration: Calibration | None = None,
        listener: DriftListener | None = None,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.reference = reference
        self.source = str(source)
        self.columns = feature_columns(reference)
        self.window = window
        self.tile = tile
        self.calibration = calibration
        self.listener = listener
        self._model_features = any(c in MODEL_FEATURES for c in self.columns)
        self._queue: queue.Queue[tuple[Volume, np.ndarray] | None] = queue.Queue(max_pending)
        self._rows: deque[dict[str, float]] = deque(maxlen=window)
        self._lock = threading.Lock()
        self._received = self._skipped = self._seen = self._checked = 0
        self._result: DriftResult | None = None
        self._checked_at: str | None = None
        self._error: str | None = None
        self._thread = threading.Thread(target=self._run, name="minivess-drift", daemon=True)

    def start(self) -> DriftMonitor:
        """Start the background thread; returns the monitor."""
        self._thread.start()
        return self

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread after the volumes already queued (waits at most ``timeout_s``)."""
        try:
            self._queue.put(_STOP, timeout=timeout_s)
        except queue.Full:
            return  # a daemon thread: it ends with the process
        self._thread.join(timeout_s)

    def observe(self, volume: Volume, probability: np.ndarray) -> bool:
        """Queue a served volume and its (calibrated) P(vessel); never blocks or raises.

        Returns:
            Whether it was queued (``False``: skipped, the queue is full).
        """
        with self._lock:
            self._received += 1
        try:
            self._queue.put_nowait((volume, probability))
        except queue.Full:
            with self._lock:
                self._skipped += 1
            logger.warning("drift monitor busy: a served volume was skipped")
            return False
        return True

    def status(self) -> dict[str, Any]:
        """What ``GET /drift`` answers: the latest verdict, or ``collecting`` before the first.

        Keys: ``status`` (``collecting``, ``ok`` or ``drift``), the reference (path, rows,
        feature columns, tile), the window (``window_rows`` of ``window_size``), counts of
        volumes ``received``, ``skipped`` (queue full), ``seen`` (features computed) and
        ``checked`` (seen when the latest verdict was made), ``checked_at`` and the last
        ``error``; after a verdict also :meth:`DriftResult.to_dict` (``drifted``, ``share``,
        ``drifted_features``, ``p_values``, thresholds and row counts).
        """
        with self._lock:
            rows, result = len(self._rows), self._result
            out: dict[str, Any] = {
                "status": "collecting" if result is None else "drift" if result.drifted else "ok",
                "reference": self.source,
                "reference_rows": len(self.reference),
                "features": self.columns,
                "tile": self.tile,
                "window_rows": rows,
                "window_size": self.window,
                "volumes_received": self._received,
                "volumes_skipped": self._skipped,
                "volumes_seen": self._seen,
                "volumes_checked": self._checked,
                "checked_at": self._checked_at,
                "error": self._error,
            }
        if result is None:
            out["message"] = f"collecting feature rows: {rows} of {self.window}"
            return out
        return {**out, **result.to_dict()}

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch = [first]
            while first is not _STOP and not self._queue.empty():  # coalesce a backlog
                batch.append(self._queue.get_nowait())
            served = [item for item in batch if item is not _STOP]
            try:
                if served:
                    self._update(served)
            except Exception as exc:  # a drift failure must never reach a request
                logger.exception("drift check failed")
                with self._lock:
                    self._error = f"{type(exc).__name__}: {exc}"
            if len(served) < len(batch):
                return

    def _update(self, batch: list[tuple[Volume, np.ndarray]]) -> None:
        for volume, probability in batch:
            rows = self._features(volume, probability)
            with self._lock:
                self._rows.extend(rows)
                self._seen += 1
        with self._lock:
            current, seen, result = list(self._rows), self._seen, self._result
        if len(current) >= self.window:
            import pandas as pd

            from minivess.drift.report import detect_drift

            result = detect_drift(self.reference, pd.DataFrame(current, columns=self.columns))
            with self._lock:
                self._result, self._checked, self._error = result, seen, None
                self._checked_at = datetime.now(UTC).isoformat(timespec="seconds")
        if self.listener is not None:
            self.listener(len(current), result)

    def _features(self, volume: Volume, probability: np.ndarray) -> list[dict[str, float]]:
        prob = None
        if self._model_features:
            prob = np.asarray(probability)
            if self.calibration is not None:
                prob = self.calibration.inverse(prob)
        table = volume_features(volume, volume_id="served", prob=prob, tile=self.tile)
        return [
            {str(column): float(value) for column, value in row.items()}
            for row in table[self.columns].to_dict("records")
        ]


def off_status() -> dict[str, Any]:
    """What ``/drift`` answers when no reference is configured."""
    return {"status": "off", "message": OFF_MESSAGE}
