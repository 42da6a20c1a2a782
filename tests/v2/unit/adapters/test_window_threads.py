"""CPU windows side by side: same probabilities, one intra-op thread per window worker."""

from __future__ import annotations

import os
import threading

import pytest
import torch

from minivess.adapters import ModelAdapter, class_mask, window_threads
from minivess.adapters.window_threads import THREAD_NAME, cpu_window_workers, map_windows


@pytest.fixture
def two_threads_fresh_pool():
    """The caller on 2 torch threads and no window workers yet, as in a fresh process."""
    before = torch.get_num_threads()
    if window_threads._executor is not None:
        window_threads._executor.shutdown(wait=True)
    window_threads._forget_after_fork()
    torch.set_num_threads(2)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_map_windows_keeps_the_batch_order_and_runs_each_part_on_a_one_thread_worker(
    two_threads_fresh_pool,
):
    """Every part on a worker with one intra-op thread, also on the workers' first use after
    the pool restored the caller's 2 threads (two teams of two on two cores ran a volume at
    half the speed of one window at a time)."""
    seen: list[tuple[str, int, int]] = []

    def fn(part: torch.Tensor) -> torch.Tensor:
        seen.append((threading.current_thread().name, torch.get_num_threads(), part.shape[0]))
        return part * 10

    batch = torch.arange(5.0).reshape(5, 1)
    out = map_windows(fn, batch, workers=2)
    assert out.flatten().tolist() == [0.0, 10.0, 20.0, 30.0, 40.0]
    assert sorted(size for _, _, size in seen) == [2, 3]
    assert all(name.startswith(THREAD_NAME) for name, _, _ in seen)
    assert {threads for _, threads, _ in seen} == {1}
    assert torch.get_num_threads() == 2  # the caller keeps its own


def test_map_windows_runs_a_single_window_or_one_worker_on_the_calling_thread():
    names: list[str] = []

    def fn(part: torch.Tensor) -> torch.Tensor:
        names.append(threading.current_thread().name)
        return part

    map_windows(fn, torch.zeros(1, 1), workers=2)
    map_windows(fn, torch.zeros(3, 1), workers=1)
    assert names == [threading.current_thread().name] * 2


def test_threads_started_after_the_workers_keep_the_callers_torch_threads(
    two_threads_fresh_pool,
):
    """The workers' one-thread setting must not leak into threads started later (a demo's or
    service's compute thread would then run on one core)."""
    map_windows(lambda part: part, torch.zeros(3, 1), workers=3)
    seen: list[int] = []
    later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    later.start()
    later.join()
    assert torch.get_num_threads() == 2
    assert seen == [2]


def test_an_error_in_a_worker_reaches_the_caller():
    def fn(part: torch.Tensor) -> torch.Tensor:
        if part[0, 0] > 0:
            raise RuntimeError("window 2 failed")
        return part

    with pytest.raises(RuntimeError, match="window 2 failed"):
        map_windows(fn, torch.arange(2.0).reshape(2, 1), workers=2)


def test_workers_follow_the_callers_torch_threads_on_cpu_only():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert cpu_window_workers(torch.device("cpu"), enabled=True) == 2
        assert cpu_window_workers(torch.device("cpu"), enabled=False) == 1
        assert cpu_window_workers(torch.device("cuda"), enabled=True) == 1
        torch.set_num_threads(1)
        assert cpu_window_workers(torch.device("cpu"), enabled=True) == 1
    finally:
        torch.set_num_threads(before)


def _forward_threads(adapter: ModelAdapter) -> list[str]:
    names: list[str] = []
    adapter.network.register_forward_pre_hook(
        lambda _m, _i: names.append(threading.current_thread().name)
    )
    return names


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_segresnet_windows_side_by_side_give_the_one_at_a_time_probabilities(
    tiny_segresnet: ModelAdapter, odd_image: torch.Tensor, precision: str, monkeypatch
):
    """Side by side on the window workers; with the flag off (as for a custom adapter that
    did not opt in) every window runs on the calling thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        names = _forward_threads(tiny_segresnet)
        side = tiny_segresnet.predict_volume(odd_image, roi_size=(16, 16, 8), precision=precision)
        ran_on = set(names)
        monkeypatch.setattr(type(tiny_segresnet), "cpu_window_threads", False)
        names.clear()
        alone = tiny_segresnet.predict_volume(odd_image, roi_size=(16, 16, 8), precision=precision)
    finally:
        torch.set_num_threads(before)
    assert ran_on
    assert all(name.startswith(THREAD_NAME) for name in ran_on)
    assert set(names) == {threading.current_thread().name}
    if precision == "fp32":
        torch.testing.assert_close(side, alone, atol=1e-5, rtol=0)
    else:  # bf16 kernels round differently on one thread than on two
        agree = (class_mask(side) == class_mask(alone)).float().mean().item()
        assert agree > 0.999
        assert (side - alone).abs().max().item() < 0.05


def test_a_forked_child_starts_its_own_window_workers():
    map_windows(lambda part: part, torch.zeros(2, 1), workers=2)  # parent's workers exist
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the parent's threads are gone; new ones must be started
        try:
            out = map_windows(lambda part: part + 1, torch.zeros(2, 1), workers=2)
            os.write(write, b"ok" if out.flatten().tolist() == [1.0, 1.0] else b"bad")
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 16) == b"ok"
    assert status == 0
