"""CPU windows side by side, one core each, instead of one window at a time on every core.

PyTorch runs one window's kernels on an OpenMP team of ``torch.get_num_threads()`` threads
that meet at a barrier after every kernel. SegResNet's kernels are short (a 96x96x16 window
is ~190 small convolutions, norms and adds), so the barriers cost: on 2 cores one bf16 window
took 97-101 ms on both cores, while two windows at once, each on one core, took 61-86 ms per
window. On a shared host the gap widens, because a team stalls whenever the hypervisor
pauses one of its cores: under heavy load, 7 paired rounds of a 512x512x25 volume ran
1.41-1.95x faster (median 1.62x) side by side; in ``just bench`` a 512x512x110 volume took
51.99 s against 64.50 s (1.24x), a 512x512x25 one 16.83 s against 16.26 s (0.97x, within the
spread); docs/benchmarks.md, "Windows side by side".

:func:`map_windows` splits a batch of windows over this process's window workers: one thread
per core, each with a single intra-op thread, so no OpenMP team is ever formed there.
Adapters opt in with ``cpu_window_threads = True`` (measured models only: the workers call
``forward`` concurrently, which a stateful custom network may not allow).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

THREAD_NAME = "minivess-window"

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_workers = 0


def _one_intra_op_thread() -> None:
    """Give this worker one intra-op thread for good, so it never forms an OpenMP team.

    torch initialises a thread's count lazily, from the process-wide count, at the thread's
    first ``get_num_threads()`` or parallel kernel. Left to the first kernel, that happens
    after :func:`_pool` has restored the caller's count, and the worker would take it: two
    workers with two threads each on two cores, which ran a 512x512x110 volume in 115 s
    against 64 s one window at a time. So the lazy initialisation runs here, first.
    """
    torch.get_num_threads()
    torch.set_num_threads(1)


def _forget_after_fork() -> None:  # a forked child has no copy of the threads
    global _executor, _workers
    _executor, _workers = None, 0


os.register_at_fork(after_in_child=_forget_after_fork)


def _pool(workers: int) -> ThreadPoolExecutor:
    """The window workers, (re)started with ``workers`` threads."""
    global _executor, _workers
    with _lock:
        if _executor is None or _workers != workers:
            if _executor is not None:
                _executor.shutdown(wait=False)
            threads = torch.get_num_threads()
            _executor = ThreadPoolExecutor(
                workers, thread_name_prefix=THREAD_NAME, initializer=_one_intra_op_thread
            )
            _workers = workers
            # Start every worker now, so that all their initialisers have run before the next
            # line: torch.set_num_threads(1) in a worker also sets torch's process-wide count,
            # which threads started later would inherit (a demo's or service's compute thread
            # would then run on one core).
            barrier = threading.Barrier(workers, timeout=60)
            for started in [_executor.submit(barrier.wait) for _ in range(workers)]:
                started.result()
            torch.set_num_threads(threads)  # the caller keeps its count; new threads get it too
        return _executor


def map_windows(
    fn: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor, workers: int
) -> torch.Tensor:
    """``fn`` over ``batch`` split along axis 0 into ``workers`` parts, run side by side.

    Each part runs on its own worker thread with one intra-op thread. Thread-local state does
    not follow (autocast, ``inference_mode``): ``fn`` must enter what it needs. Results are
    concatenated in the order of the batch; the first error raised by ``fn`` is re-raised.

    Args:
        fn: Maps windows ``(b, C, *window)`` to logits ``(b, classes, *window)``.
        batch: Windows ``(B, C, *window)``.
        workers: Most parts to run at once (``1`` runs ``fn`` on the calling thread).

    Example:
        >>> map_windows(lambda x: x * 2, torch.arange(4.0).reshape(4, 1), 2).flatten().tolist()
        [0.0, 2.0, 4.0, 6.0]
    """
    parts = batch.tensor_split(min(workers, batch.shape[0]))
    if len(parts) == 1:
        return fn(batch)
    pool = _pool(workers)
    futures = [pool.submit(fn, part) for part in parts]
    return torch.cat([future.result() for future in futures])


def cpu_window_workers(device: torch.device, enabled: bool) -> int:
    """How many windows to run side by side: the caller's torch threads on CPU, else 1."""
    if not enabled or device.type != "cpu":
        return 1
    return max(1, torch.get_num_threads())
