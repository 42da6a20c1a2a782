"""The compute thread: every load and prediction of a served model on one OpenMP master thread."""

from __future__ import annotations

import contextvars
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.v2.conftest import PREDICTION_EXTRA

from minivess.data.volume import Volume
from minivess.inference import Predictor
from minivess.inference.compute import THREAD_NAME, on_compute_thread

_where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="unset")


def test_returns_the_result_and_raises_the_error_of_the_call() -> None:
    assert on_compute_thread(sum, [1, 2, 3]) == 6
    assert on_compute_thread(dict, a=1) == {"a": 1}
    with pytest.raises(ZeroDivisionError):
        on_compute_thread(lambda: 1 / 0)


def test_calls_from_many_threads_run_on_one_named_thread_one_at_a_time() -> None:
    running, overlaps, seen = [0], [0], set()
    lock = threading.Lock()

    def work(_: int) -> int:
        with lock:
            running[0] += 1
            overlaps[0] = max(overlaps[0], running[0])
        seen.add((threading.get_ident(), threading.current_thread().name))
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return threading.get_ident()

    with ThreadPoolExecutor(4) as callers:
        idents = set(callers.map(lambda i: on_compute_thread(work, i), range(12)))
    assert len(idents) == 1
    assert len(seen) == 1
    assert next(iter(seen))[1].startswith(THREAD_NAME)
    assert overlaps[0] == 1  # never two at once: one volume's memory at a time


def test_sees_the_callers_context_and_may_call_itself() -> None:
    token = _where.set("request")
    try:
        assert on_compute_thread(_where.get) == "request"
        # a call made on the compute thread runs at once instead of waiting for itself
        assert on_compute_thread(on_compute_thread, _where.get) == "request"
    finally:
        _where.reset(token)


def test_a_model_loaded_and_run_from_request_threads_computes_on_one_thread(
    tiny_adapter: Any, tmp_path: Path
) -> None:
    """What the service and demo rely on: no second OpenMP team, whichever thread asks."""
    checkpoint = tiny_adapter.save_checkpoint(tmp_path / "tiny.pt", extra=PREDICTION_EXTRA)
    with ThreadPoolExecutor(1, thread_name_prefix="loader") as loader:
        predictor = loader.submit(on_compute_thread, Predictor.from_source, checkpoint).result()
    forward_threads: set[int] = set()
    predictor.adapter.network.register_forward_pre_hook(
        lambda *_: forward_threads.add(threading.get_ident())
    )
    volume = Volume(np.random.default_rng(0).random((40, 40, 12), dtype=np.float32), np.eye(4))
    with ThreadPoolExecutor(2, thread_name_prefix="request") as requests:
        masks = list(
            requests.map(lambda _: on_compute_thread(predictor.predict, volume).mask, range(3))
        )
    assert forward_threads == {on_compute_thread(threading.get_ident)}
    assert all(np.array_equal(m.array, masks[0].array) for m in masks)
