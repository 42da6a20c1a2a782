"""Concurrent load on a running minivess service: errors, latency and the server's memory.

Run it from a second process against ``minivess serve`` on 127.0.0.1::

    python -m benchmarks.service_load --url http://127.0.0.1:3000 --file volume.nii.gz
        --clients 8 --requests 200 --server-pid <pid of minivess serve> --out load.json

Each of ``clients`` threads posts the volume to ``/segment`` until ``requests`` responses have
come back in total. The resident memory of the server's process tree is sampled throughout:
before the load (baseline), its peak, and a few seconds after (settled). With ``--rounds N`` the
report adds a leak verdict: the least-squares slope of the settled memory across rounds and
whether the last round settled within ``--leak-tolerance-mib`` of the first (whose settled
memory already holds the one-off growth of warming up). Every report also says whether the
last round settled within that tolerance of the idle server's memory before the first round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
import requests

SETTLE_S = 5.0
"""Seconds waited after a round before reading the settled memory."""
LEAK_TOLERANCE_MIB = 50.0
"""Growth of settled memory from the first round to the last still called no leak."""


@dataclass
class Round:
    """One round of load: every latency in seconds, the failures, and memory in MiB."""

    requests: int
    errors: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    rss_before_mib: float = 0.0
    rss_peak_mib: float = 0.0
    rss_after_mib: float = 0.0

    def summary(self) -> dict[str, float | int]:
        """p50/p95/max latency, throughput, error count and memory figures."""
        ordered = sorted(self.latencies_s) or [float("nan")]
        return {
            "requests": self.requests,
            "errors": len(self.errors),
            "p50_s": round(statistics.median(ordered), 3),
            "p95_s": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
            "max_s": round(ordered[-1], 3),
            "throughput_rps": round(len(self.latencies_s) / self.wall_s, 2) if self.wall_s else 0,
            "rss_before_mib": round(self.rss_before_mib, 1),
            "rss_peak_mib": round(self.rss_peak_mib, 1),
            "rss_after_mib": round(self.rss_after_mib, 1),
        }


def tree_rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, in MiB."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def leak_verdict(
    settled_mib: Sequence[float], tolerance_mib: float, start_mib: float | None = None
) -> dict[str, object]:
    """Whether the server's settled memory grows from round to round, and returns to its start.

    Args:
        settled_mib: Settled resident memory after each round, in MiB, in order.
        tolerance_mib: Largest growth from the first round to the last called no leak, and
            largest distance above ``start_mib`` still called a return to the start.
        start_mib: Resident memory of the idle server before the first round, if measured.

    Returns:
        The settled figures, the least-squares slope in MiB per round, the growth from the
        first round to the last, whether that growth is within ``tolerance_mib``, and a
        one-line ``verdict``. With fewer than two rounds there is nothing to compare: slope,
        growth and ``within_tolerance`` are ``None``. With ``start_mib``: how far the last
        settled figure is above it (``above_start_mib``) and ``returned_to_start``.

    Raises:
        ValueError: If ``settled_mib`` is empty or ``tolerance_mib`` is negative.
    """
    if not settled_mib:
        raise ValueError("no rounds to judge")
    if tolerance_mib < 0:
        raise ValueError(f"leak tolerance must be >= 0 MiB, got {tolerance_mib}")
    rounds = len(settled_mib)
    figures: dict[str, object] = {
        "rounds": rounds,
        "settled_rss_mib": [round(value, 1) for value in settled_mib],
        "tolerance_mib": tolerance_mib,
    }
    returned = ""
    if start_mib is not None:
        above = settled_mib[-1] - start_mib
        figures |= {
            "start_rss_mib": round(start_mib, 1),
            "above_start_mib": round(above, 1),
            "returned_to_start": above <= tolerance_mib,
        }
        returned = (
            f"; settled {above:+.1f} MiB from the idle start "
            f"({'returned' if above <= tolerance_mib else 'did not return'})"
        )
    if rounds < 2:
        return figures | {
            "slope_mib_per_round": None,
            "growth_mib": None,
            "within_tolerance": None,
            "verdict": "one round: run with --rounds 2 or more for a leak verdict" + returned,
        }
    mean_x = (rounds - 1) / 2
    mean_y = statistics.fmean(settled_mib)
    slope = sum((i - mean_x) * (y - mean_y) for i, y in enumerate(settled_mib)) / sum(
        (i - mean_x) ** 2 for i in range(rounds)
    )
    growth = settled_mib[-1] - settled_mib[0]
    within = growth <= tolerance_mib
    verdict = (
        f"{'no leak seen' if within else 'possible leak'}: settled RSS {growth:+.1f} MiB "
        f"from round 1 to round {rounds} (tolerance {tolerance_mib:g} MiB), "
        f"slope {slope:+.2f} MiB/round{returned}"
    )
    return figures | {
        "slope_mib_per_round": round(slope, 2),
        "growth_mib": round(growth, 1),
        "within_tolerance": within,
        "verdict": verdict,
    }


def run_round(url: str, volume: bytes, name: str, clients: int, total: int, pid: int) -> Round:
    """Post ``volume`` ``total`` times from ``clients`` threads; sample the server's memory."""
    result = Round(requests=total)
    result.rss_before_mib = tree_rss_mib(pid)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            result.rss_peak_mib = max(result.rss_peak_mib, tree_rss_mib(pid))
            stop.wait(0.2)

    def one(_: int) -> None:
        started = time.perf_counter()
        try:
            response = requests.post(f"{url}/segment", files={"file": (name, volume)}, timeout=600)
        except requests.RequestException as exc:
            result.errors.append(type(exc).__name__)
            return
        if response.status_code != 200 or not response.content:
            result.errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
            return
        result.latencies_s.append(time.perf_counter() - started)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(one, range(total)))
    result.wall_s = time.perf_counter() - started
    time.sleep(SETTLE_S)
    stop.set()
    sampler.join()
    result.rss_after_mib = tree_rss_mib(pid)
    return result


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Run the rounds, print and optionally save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--file", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--leak-tolerance-mib", type=float, default=LEAK_TOLERANCE_MIB)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.leak_tolerance_mib < 0:
        parser.error("--leak-tolerance-mib must be >= 0")
    volume = args.file.read_bytes()
    rounds = [
        run_round(args.url, volume, args.file.name, args.clients, args.requests, args.server_pid)
        for _ in range(args.rounds)
    ]
    leak = leak_verdict(
        [r.rss_after_mib for r in rounds], args.leak_tolerance_mib, rounds[0].rss_before_mib
    )
    report: dict[str, object] = {
        "clients": args.clients,
        "volume": args.file.name,
        "volume_bytes": len(volume),
        "rounds": [r.summary() for r in rounds],
        "leak": leak,
        "errors": [e for r in rounds for e in r.errors][:20],
        "raw": [asdict(r) for r in rounds] if args.out else [],
    }
    print(json.dumps({k: v for k, v in report.items() if k != "raw"}, indent=1))
    print(leak["verdict"])
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
