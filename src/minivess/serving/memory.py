"""Give a worker's freed heap back to the operating system once it is idle.

A prediction allocates hundreds of MiB of arrays (the decoded upload, the normalised input,
windows, the blended probabilities, the outputs) and frees them when the response is sent.
glibc's ``malloc`` keeps freed memory in its arenas (one per request thread under BentoML)
instead of returning it, so a served worker's resident memory climbs over the first requests
and stays high after the load has gone (docs/benchmarks.md, "Service under concurrent load").
:class:`IdleReleaser` calls glibc's ``malloc_trim(0)`` once no request has finished for
``delay_s`` seconds, which hands the free pages of every arena back (``MADV_DONTNEED``); the
next request maps them again, a few milliseconds against seconds of inference.

On a C library without ``malloc_trim`` (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


def _glibc_malloc_trim() -> Callable[[int], int] | None:
    """The C library's ``malloc_trim`` (glibc), or ``None`` where it has none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _glibc_malloc_trim()


def release_free_memory() -> bool:
    """Return the C heap's free pages to the OS; ``True`` if any were released.

    Safe to call from any thread at any time: glibc takes each arena's lock in turn.
    """
    if _MALLOC_TRIM is None:
        return False
    return bool(_MALLOC_TRIM(0))


def can_release() -> bool:
    """Whether this process's C library can give freed heap back (glibc)."""
    return _MALLOC_TRIM is not None


class IdleReleaser:
    """Calls :func:`release_free_memory` once the worker has been idle for ``delay_s``.

    Call :meth:`busy` when a request starts and :meth:`done` when it has finished; the
    release runs on a daemon thread, at most once per burst of requests, and never while a
    request is running.

    Args:
        delay_s: Quiet time after the last request before the heap is trimmed.
        release: What to call (:func:`release_free_memory`; replaceable for tests).
    """

    def __init__(
        self, delay_s: float = 2.0, release: Callable[[], bool] = release_free_memory
    ) -> None:
        if delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s}")
        self.delay_s = delay_s
        self._release = release
        self._lock = threading.Condition()
        self._running = 0
        self._last_done = 0.0
        self._pending = False
        self._closed = False
        self.releases = 0
        """How many times the heap was trimmed."""
        self._thread = threading.Thread(target=self._loop, name="minivess-memory", daemon=True)

    def start(self) -> IdleReleaser:
        """Start the background thread; returns ``self``."""
        self._thread.start()
        return self

    def busy(self) -> None:
        """A request has started."""
        with self._lock:
            self._running += 1

    def done(self) -> None:
        """A request has finished (successfully or not)."""
        with self._lock:
            self._running = max(0, self._running - 1)
            self._last_done = time.monotonic()
            self._pending = True
            self._lock.notify_all()

    @contextmanager
    def request(self) -> Iterator[None]:
        """``busy`` on entry and ``done`` on exit, whatever the outcome."""
        self.busy()
        try:
            yield
        finally:
            self.done()

    def close(self) -> None:
        """Stop the background thread."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._closed and (not self._pending or self._running):
                    self._lock.wait()
                if self._closed:
                    return
                quiet = time.monotonic() - self._last_done
                if quiet < self.delay_s:
                    self._lock.wait(self.delay_s - quiet)
                    continue
                self._pending = False
            try:
                self._release()
                self.releases += 1
            except Exception:  # a failed trim must never disturb serving
                log.exception("releasing free memory failed")
