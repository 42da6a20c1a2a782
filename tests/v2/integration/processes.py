"""Helpers for integration tests that run a real server in its own process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_group(
    command: list[str], log: Path, *, env: dict[str, str], cwd: Path
) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own process group (so :func:`stop_group` also stops the workers
    it forks), with stdout and stderr going to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )


def stop_group(process: subprocess.Popen[bytes], timeout_s: float = 20) -> None:
    """Stop the process group of ``process``, started with ``start_new_session=True``.

    SIGTERM first; SIGKILL if it has not exited within ``timeout_s``.
    """
    if process.poll() is not None:  # exited already (a failed start): no group left to stop
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    """Wait until ``GET url`` answers 200; fail the test with the log if the process dies first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args} exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"{url} not healthy after {timeout_s} s:\n{log.read_text()[-3000:]}")


@dataclass(frozen=True)
class Started:
    """A server started in its own process group: where it listens, its process and its log."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def minivess_serve(args: list[str], folder: Path, **env: str) -> Iterator[Started]:
    """``minivess serve ARGS --port <free port>`` run in ``folder`` (log ``server.log``) with
    telemetry off and ``env`` added to the environment; its process group is stopped on exit.
    Not awaited: call :func:`wait_healthy` on ``/readyz`` when the test needs it."""
    port = free_port()
    environment = dict(
        os.environ, BENTOML_DO_NOT_TRACK="True", MLFLOW_DISABLE_TELEMETRY="true", **env
    )
    command = [str(Path(sys.executable).parent / "minivess"), "serve", *args, "--port", str(port)]
    log = folder / "server.log"
    process = start_group(command, log, env=environment, cwd=folder)
    try:
        yield Started(f"http://127.0.0.1:{port}", process, log)
    finally:
        stop_group(process)


_seen: dict[Path, tuple[int, int]] = {}


def checkpoint_epoch(checkpoint: Path) -> int:
    """Epochs completed according to a training checkpoint; -1 before the first one.

    The file is read only when its modification time changed since the last call, so tests
    may poll this often without loading the same checkpoint again and again.
    """
    import torch

    try:
        stamp = checkpoint.stat().st_mtime_ns
    except FileNotFoundError:
        return -1
    seen = _seen.get(checkpoint)
    if seen is not None and seen[0] == stamp:
        return seen[1]
    payload = torch.load(checkpoint, weights_only=True)
    epoch = int(payload["extra"]["trainer"]["train_state"]["epoch"])
    _seen[checkpoint] = (stamp, epoch)
    return epoch
