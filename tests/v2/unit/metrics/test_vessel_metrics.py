"""VesselMetrics: the six metrics in one pass, per volume, across DDP ranks and devices."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from minivess.metrics import (
    ClDice,
    Dice,
    HausdorffDistance95,
    IoU,
    MeanSurfaceDistance,
    NormalizedSurfaceDice,
    VesselMetrics,
)

NAMES = ["dice", "iou", "cldice", "nsd", "hd95", "masd"]


def test_gives_the_same_values_as_the_single_metrics(real_pairs):
    preds, target, spacing = real_pairs
    metrics = VesselMetrics(tolerance_um=3.0)
    metrics.update(preds, target, spacing=spacing)
    singles = {
        "dice": Dice(),
        "iou": IoU(),
        "cldice": ClDice(),
        "nsd": NormalizedSurfaceDice(tolerance_um=3.0),
        "hd95": HausdorffDistance95(),
        "masd": MeanSurfaceDistance(),
    }
    per_volume, means = metrics.per_volume(), metrics.compute()
    assert list(per_volume) == NAMES
    assert list(means) == NAMES
    for name, single in singles.items():
        single.update(preds, target, spacing=spacing)
        torch.testing.assert_close(per_volume[name], single.per_volume())
        torch.testing.assert_close(means[name], single.compute())


def test_undefined_distances_are_counted_and_skipped(make_blobs):
    vessel = make_blobs(1, seed=1)
    empty = torch.zeros_like(vessel)
    metrics = VesselMetrics()
    metrics.update(torch.cat([vessel, empty]), torch.cat([vessel, vessel]))
    assert metrics.nan_counts() == {name: int(name in ("hd95", "masd")) for name in NAMES}
    means = metrics.compute()
    assert means["dice"].item() == pytest.approx(0.5)  # 1 and 0
    assert means["hd95"].item() == 0.0  # the missed volume is left out
    assert math.isnan(metrics.per_volume()["masd"][1].item())


def test_refuses_a_negative_tolerance():
    with pytest.raises(ValueError, match="tolerance_um"):
        VesselMetrics(tolerance_um=-2.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_a_gpu_with_the_same_values(make_blobs):
    preds, target = make_blobs(2, seed=1), make_blobs(2, seed=2)
    on_cpu, on_gpu = VesselMetrics(), VesselMetrics().to("cuda")
    on_cpu.update(preds, target, spacing=(1.0, 1.0, 5.0))
    on_gpu.update(preds.cuda(), target.cuda(), spacing=(1.0, 1.0, 5.0))
    for name, value in on_gpu.compute().items():
        assert value.device.type == "cuda"
        torch.testing.assert_close(value.cpu(), on_cpu.compute()[name])


_WORKER = textwrap.dedent(
    """
    import sys
    import torch
    import torch.distributed as dist
    from minivess.metrics import VesselMetrics

    rank, port, data, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    preds, target = torch.load(data)
    mine = slice(0, 2) if rank == 0 else slice(2, 3)  # uneven shares, as a sampler may give
    metrics = VesselMetrics()
    metrics.update(preds[mine], target[mine], spacing=(1.0, 1.0, 5.0))
    torch.save({"mean": metrics.compute(), "per_volume": metrics.per_volume()}, f"{out}{rank}.pt")
    dist.destroy_process_group()
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_two_gloo_ranks_gather_every_volume(make_blobs, tmp_path: Path):
    preds, target = make_blobs(3, seed=1), make_blobs(3, seed=2)
    torch.save((preds, target), tmp_path / "data.pt")
    (tmp_path / "worker.py").write_text(_WORKER)
    port, out = str(_free_port()), str(tmp_path / "rank")
    args = [str(tmp_path / "worker.py"), port, str(tmp_path / "data.pt"), out]
    workers = [
        subprocess.Popen(
            [sys.executable, args[0], str(rank), *args[1:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for rank in (0, 1)
    ]
    for worker in workers:
        output, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0, output.decode()

    single = VesselMetrics()
    single.update(preds, target, spacing=(1.0, 1.0, 5.0))
    for rank in (0, 1):
        result = torch.load(f"{out}{rank}.pt")
        for name in NAMES:
            torch.testing.assert_close(result["per_volume"][name], single.per_volume()[name])
            torch.testing.assert_close(result["mean"][name], single.compute()[name])
