"""Stop a run when validation stops improving, or when its time budget is spent."""

from __future__ import annotations

from minivess.training.engine import Trainer
from minivess.training.events import Event


class EarlyStopping:
    """Stop after ``patience`` validations without improvement of ``trainer.monitor``.

    Args:
        patience: Validations without a new best before stopping.
        min_delta: Smallest increase that counts as an improvement.
    """

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        self.patience = patience
        self.min_delta = min_delta

    def attach(self, trainer: Trainer) -> None:
        """Check after every validation."""
        trainer.on(Event.VALIDATION_COMPLETED, self._check)

    def _check(self, trainer: Trainer) -> None:
        best_epoch = trainer.state.best_epoch
        if best_epoch is None:
            return
        validations_since = sum(
            1 for rec in trainer.state.history if rec["epoch"] > best_epoch and _validated(rec)
        ) + (1 if trainer.state.epoch > best_epoch else 0)
        if validations_since >= self.patience:
            trainer.state.should_stop = True
            trainer.state.stop_reason = "early_stopping"


def _validated(record: dict[str, float]) -> bool:
    return any(key.startswith("val_") for key in record)


class TimeLimit:
    """End the run after the epoch during which ``minutes`` of training time have passed.

    Time counts across resumes (``state.elapsed_s``), so a resumed run keeps its budget.
    """

    def __init__(self, minutes: float) -> None:
        self.seconds = minutes * 60.0

    def attach(self, trainer: Trainer) -> None:
        """Check at the end of every epoch."""
        trainer.on(Event.EPOCH_COMPLETED, self._check)

    def _check(self, trainer: Trainer) -> None:
        if trainer.state.elapsed_s >= self.seconds:
            trainer.state.should_stop = True
            trainer.state.stop_reason = "time_limit"
