"""Checks that run before the first training step, so a doomed run fails in seconds, not hours.

* :func:`check_writable`: the run folder can be created and written to;
* :func:`check_free_space`: its file system has room for the checkpoints the run will write
  (:func:`checkpoint_budget`).

Both raise a :class:`~minivess.errors.MinivessError` whose message names the folder and the fix;
the CLI prints it as one line and exits with code 2.
"""

from __future__ import annotations

import errno
import shutil
import tempfile
from pathlib import Path

import torch

from minivess.errors import MinivessError

HEADROOM_BYTES = 64 * 2**20
"""Room kept for everything but checkpoints: history, evaluation tables and figures, logs."""
_CHECKPOINT_COPIES = 3  # last.pt, best.pt, and the temporary file of the write in progress
_STATE_PER_WEIGHT = 3  # weights plus the optimizer's two moments (Adam-like optimizers)
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES})
"""``errno`` values of a write that fails because of the disk, not because of the data."""


def check_writable(run_dir: str | Path) -> None:
    """Create ``run_dir`` if needed and write (then delete) a probe file in it.

    Raises:
        MinivessError: The folder cannot be created or written to (permissions, a read-only
            file system, a file in the way, a full disk).
    """
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-probe-") as probe:
            probe.write(b"minivess")
            probe.flush()
    except OSError as exc:
        raise MinivessError(
            f"cannot write to the output folder {run_dir} ({exc.strerror or exc}); choose "
            "another folder (--run-dir / --runs-dir) or fix its permissions"
        ) from None


def checkpoint_budget(network: torch.nn.Module) -> int:
    """Bytes a run of ``network`` needs on disk: its checkpoints plus :data:`HEADROOM_BYTES`."""
    weights = sum(t.numel() * t.element_size() for t in network.state_dict().values())
    return _CHECKPOINT_COPIES * _STATE_PER_WEIGHT * weights + HEADROOM_BYTES


def check_free_space(run_dir: str | Path, needed_bytes: int) -> None:
    """Refuse to start when the file system of ``run_dir`` has less than ``needed_bytes`` free.

    Raises:
        MinivessError: Not enough space; the message gives both figures.
    """
    free = shutil.disk_usage(run_dir).free
    if free < needed_bytes:
        raise MinivessError(
            f"not enough disk space for {run_dir}: {free / 2**20:.0f} MiB free, the run needs "
            f"about {needed_bytes / 2**20:.0f} MiB for its checkpoints and outputs; free some "
            "space or choose another folder (--run-dir / --runs-dir)"
        )


def disk_write_error(path: Path, exc: OSError, previous: Path) -> MinivessError:
    """The message for a checkpoint write that failed for lack of disk (or permission).

    Args:
        path: The checkpoint being written.
        exc: The error of the write.
        previous: The checkpoint that remains intact.
    """
    kept = f"{previous} is intact" if previous.is_file() else "no earlier checkpoint exists"
    return MinivessError(
        f"cannot write checkpoint {path} ({exc.strerror or exc}); {kept}. Free disk space, then "
        f"continue with: minivess train --resume {path.parent.parent}"
    )
