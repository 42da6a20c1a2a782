"""A rich progress bar over epochs and steps, with the latest loss and validation metric."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from minivess.training.engine import Trainer
from minivess.training.events import Event


class ProgressBar:
    """Shows epochs completed out of ``max_epochs``, the last loss and the monitored metric.

    On a terminal this is a live bar; in a log file (no terminal) it prints one line per
    validation instead, so long runs leave a readable trace.
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._task: Any = None

    def attach(self, trainer: Trainer) -> None:
        """Open on start, advance per epoch, close on completion or error."""
        trainer.on(Event.STARTED, self._start)
        trainer.on(Event.ITERATION_COMPLETED, self._step)
        trainer.on(Event.CHECKPOINT_DUE, self._epoch)
        trainer.on(Event.VALIDATION_COMPLETED, self._log_validation)
        trainer.on(Event.COMPLETED, self._close)
        trainer.on(Event.EXCEPTION_RAISED, self._close)

    def _start(self, trainer: Trainer) -> None:
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=not self.console.is_terminal,
        )
        self._progress.start()
        self._task = self._progress.add_task(
            "train", total=trainer.max_epochs, completed=trainer.state.epoch, status=""
        )

    def _status(self, trainer: Trainer) -> str:
        state = trainer.state
        text = f"step {state.iteration} loss {state.last_loss:.4f}"
        if trainer.monitor in state.metrics:
            text += f" val {trainer.monitor} {state.metrics[trainer.monitor]:.4f}"
        return text

    def _step(self, trainer: Trainer) -> None:
        if self._progress is not None:
            self._progress.update(self._task, status=self._status(trainer))

    def _epoch(self, trainer: Trainer) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task, completed=trainer.state.epoch, status=self._status(trainer)
            )

    def _log_validation(self, trainer: Trainer) -> None:
        if not self.console.is_terminal:
            state = trainer.state
            self.console.print(
                f"epoch {state.epoch}/{trainer.max_epochs} {self._status(trainer)} "
                f"({state.elapsed_s / 60:.1f} min)",
                highlight=False,
            )

    def _close(self, trainer: Trainer) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
