"""Events fired by the training engine; handlers subscribe to them and never the other way round."""

from __future__ import annotations

from enum import StrEnum


class Event(StrEnum):
    """Points in a training run where handlers are called, in firing order."""

    STARTED = "started"
    """Once, before the first epoch (after a resume, before the first remaining epoch)."""
    EPOCH_STARTED = "epoch_started"
    """At the start of every epoch."""
    ITERATION_COMPLETED = "iteration_completed"
    """After every optimizer step (after gradient accumulation)."""
    EPOCH_COMPLETED = "epoch_completed"
    """After the last step of an epoch, before validation."""
    VALIDATION_COMPLETED = "validation_completed"
    """After whole-volume validation; ``state.metrics`` holds the new values."""
    CHECKPOINT_DUE = "checkpoint_due"
    """At the end of an epoch, after validation: the moment to persist the run's state."""
    COMPLETED = "completed"
    """Once, when the run ends normally (max epochs, early stop or time limit)."""
    EXCEPTION_RAISED = "exception_raised"
    """When the loop raises; handlers may record it, the exception is then re-raised."""
