"""Write ``last.pt`` every epoch and ``best.pt`` on a new best, atomically, with resume state."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from minivess.adapters.checkpoint import CheckpointInfo, load_checkpoint
from minivess.data.io import atomic_path
from minivess.training.engine import Trainer
from minivess.training.events import Event
from minivess.training.preflight import DISK_ERRNOS, disk_write_error

LAST = "last.pt"
BEST = "best.pt"


class Checkpointer:
    """Persist the run at every ``CHECKPOINT_DUE`` so a killed run loses at most one epoch.

    Both files are self-describing minivess checkpoints (adapter name, config, weights, data and
    code version) whose ``extra["trainer"]`` holds optimizer, scheduler, scaler and loop state.

    Args:
        directory: Folder for ``last.pt`` and ``best.pt``; created if missing.
        data_version: Version of the training data, stored in every checkpoint.
        extra: Callable returning further plain values to store (e.g. the tracking run id).
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        data_version: str | None = None,
        extra: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.data_version = data_version
        self.extra = extra

    @property
    def last(self) -> Path:
        """Path of the latest checkpoint."""
        return self.directory / LAST

    @property
    def best(self) -> Path:
        """Path of the best checkpoint (by the trainer's monitored metric)."""
        return self.directory / BEST

    def attach(self, trainer: Trainer) -> None:
        """Save at the end of every epoch, after removing what a killed write left behind."""
        trainer.on(Event.STARTED, self.remove_partial_writes)
        trainer.on(Event.CHECKPOINT_DUE, self.save)

    def remove_partial_writes(self, trainer: Trainer | None = None) -> list[Path]:
        """Delete temporary files of writes a killed process never finished.

        Checkpoints are written to a hidden ``.<name>.*.part`` file and renamed into place, so a
        kill mid-write leaves ``last.pt`` and ``best.pt`` intact and only such a file behind.
        """
        if not self.directory.is_dir():
            return []
        partial = sorted(self.directory.glob(".*.part"))
        for path in partial:
            path.unlink(missing_ok=True)
        return partial

    def save(self, trainer: Trainer) -> Path:
        """Write ``last.pt`` and, if this epoch set a new best, ``best.pt`` (a copy of it)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        extra: dict[str, Any] = {"trainer": trainer.state_dict(include_model=False)}
        if self.extra is not None:
            extra.update(self.extra())
        try:
            trainer.adapter.save_checkpoint(self.last, data_version=self.data_version, extra=extra)
            if trainer.state.best_epoch == trainer.state.epoch:
                with atomic_path(self.best) as tmp:
                    shutil.copyfile(self.last, tmp)
        except OSError as exc:
            if exc.errno not in DISK_ERRNOS:
                raise
            raise disk_write_error(self.last, exc, self.last) from None
        return self.last


def resume(trainer: Trainer, path: str | Path) -> CheckpointInfo:
    """Load weights and training state from a checkpoint into ``trainer`` to continue its run."""
    adapter, info = load_checkpoint(path)
    trainer.adapter.network.load_state_dict(adapter.network.state_dict())
    trainer.load_state_dict(info.extra["trainer"])
    return info
