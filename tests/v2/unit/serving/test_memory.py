"""The worker's idle memory release (minivess.serving.memory)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from minivess.serving.memory import IdleReleaser, can_release, release_free_memory


def _wait_for(condition, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def _counting_releaser(delay_s: float) -> tuple[IdleReleaser, list[float]]:
    calls: list[float] = []

    def release() -> bool:
        calls.append(time.monotonic())
        return True

    return IdleReleaser(delay_s, release=release).start(), calls


def test_releases_once_after_the_last_request_of_a_burst() -> None:
    releaser, calls = _counting_releaser(0.2)
    try:
        finished = []
        for _ in range(3):
            with releaser.request():
                time.sleep(0.02)
            finished.append(time.monotonic())
        assert _wait_for(lambda: len(calls) == 1)
        # Not before the quiet time after the last request, and only once for the burst.
        assert calls[0] - finished[-1] >= 0.2
        time.sleep(0.4)
        assert len(calls) == 1
        assert releaser.releases == 1
    finally:
        releaser.close()


def test_never_releases_while_a_request_is_running() -> None:
    releaser, calls = _counting_releaser(0.05)
    try:
        with releaser.request():
            pass
        assert _wait_for(lambda: len(calls) == 1)
        releaser.busy()  # a long request starts
        with releaser.request():  # and a short one finishes meanwhile
            pass
        time.sleep(0.3)
        assert len(calls) == 1, "trimmed while a request was still running"
        releaser.done()
        assert _wait_for(lambda: len(calls) == 2)
    finally:
        releaser.close()


def test_a_failed_request_still_counts_as_done() -> None:
    releaser, calls = _counting_releaser(0.05)
    try:
        with pytest.raises(RuntimeError), releaser.request():
            raise RuntimeError("bad upload")
        assert _wait_for(lambda: len(calls) == 1)
    finally:
        releaser.close()


def test_a_failing_release_does_not_stop_the_thread() -> None:
    calls: list[int] = []

    def release() -> bool:
        calls.append(1)
        raise OSError("trim failed")

    releaser = IdleReleaser(0.01, release=release).start()
    try:
        for expected in (1, 2):
            with releaser.request():
                pass
            assert _wait_for(lambda expected=expected: len(calls) == expected)
    finally:
        releaser.close()
    assert not any(t.name == "minivess-memory" and t.is_alive() for t in threading.enumerate())


def test_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="delay_s"):
        IdleReleaser(-1)


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not can_release(), reason="C library without malloc_trim (not glibc)")
def test_trim_gives_fragmented_heap_back_to_the_os() -> None:
    """Freed small blocks pinned between live ones stay resident until trimmed."""
    # 1 KiB blocks stay below glibc's mmap threshold, so they live in the heap; keeping every
    # 64th block alive stops the heap top from shrinking on free alone.
    blocks = [np.ones(1024 // 8) for _ in range(200_000)]
    keep = blocks[::64]
    del blocks
    before = _rss_mib()
    assert release_free_memory()
    after = _rss_mib()
    assert before - after > 50, f"RSS {before:.0f} -> {after:.0f} MiB"
    assert all(float(block.sum()) == 128.0 for block in keep)  # live data untouched
