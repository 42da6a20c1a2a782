"""One thread per process for the network's CPU work: loading, then every prediction.

PyTorch's CPU kernels run on GNU OpenMP, which gives every thread that starts a parallel region
its own team of worker threads. Once a process holds more OpenMP threads than the machine has
cores, libgomp cuts every team's spin-wait between two kernels from 300,000 to 1,000
iterations, so its workers sleep and must be woken for each kernel. A model loaded on a
server's main thread and run on its request threads is enough: on 2 cores a 256x256x25 volume
then used 0.8-1.2 cores instead of 2.0, with about 10,000 voluntary context switches instead of
under 30, and took 1.2-2.6x as long (docs/benchmarks.md, "Serving overhead: one compute
thread"). ``OMP_WAIT_POLICY=ACTIVE`` made it worse (the idle team spins on the cores the busy
one needs).

The REST service and the Gradio demo therefore load and run their models through
:func:`on_compute_thread`. A script that loads and predicts on one thread needs nothing.
Windows of adapters with ``cpu_window_threads`` then run on the window workers
(:mod:`minivess.adapters.window_threads`), each with one intra-op thread, so they form no
further OpenMP team.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

THREAD_NAME = "minivess-compute"

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_thread_id: int | None = None


def _remember_thread() -> None:
    global _thread_id
    _thread_id = threading.get_ident()


def _forget_after_fork() -> None:  # a forked child has no copy of the thread
    global _executor, _thread_id
    _executor, _thread_id = None, None


os.register_at_fork(after_in_child=_forget_after_fork)


def on_compute_thread(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """``fn(*args, **kwargs)`` run on this process's compute thread: its result, or its error.

    Calls run one at a time in the order they arrive (so the thread also keeps concurrent
    requests from holding two volumes' worth of memory at once). ``fn`` sees the caller's
    context variables (window blending, progress, tracing). Called on the compute thread
    itself, ``fn`` runs at once.

    Example:
        >>> on_compute_thread(sum, [1, 2, 3])
        6
    """
    global _executor
    if threading.get_ident() == _thread_id:
        return fn(*args, **kwargs)
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                1, thread_name_prefix=THREAD_NAME, initializer=_remember_thread
            )
        executor = _executor
    context = contextvars.copy_context()
    return executor.submit(lambda: context.run(fn, *args, **kwargs)).result()
