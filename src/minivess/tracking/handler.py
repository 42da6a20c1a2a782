"""Training handler that logs a run's losses, learning rate, metrics and curves to MLflow."""

from __future__ import annotations

from typing import TYPE_CHECKING

from minivess.errors import ConfigError
from minivess.training.events import Event

if TYPE_CHECKING:
    from minivess.tracking.run import TrackedRun
    from minivess.training.engine import Trainer

EPOCH_METRIC_NAMES = {"loss": "train_loss"}
"""History keys renamed when logged; every other key (``lr``, ``epoch_time_s``, ``val_*``) is
logged under its own name. ``epoch`` is the step, not a metric."""
STEP_LOSS = "train_loss_step"
STEP_LR = "lr_step"


class MLflowHandler:
    """Log a :class:`~minivess.training.engine.Trainer` into a :class:`TrackedRun`.

    What is logged, and at which step:

    - every ``log_every`` optimizer steps: ``train_loss_step`` (loss of that step) and
      ``lr_step``, at step = iteration;
    - every epoch: the epoch's history record (``train_loss``, ``lr``, ``epoch_time_s`` and,
      after a validation, each ``val_<metric>``) plus ``best_val_<monitor>``, at step = epoch;
    - at the end: tags ``stop_reason`` and ``best_epoch``, and the figures
      ``plots/loss.png`` and ``plots/val_metrics.png``.

    A resumed run continues the same metric histories: epochs whose record never reached the
    run (a process killed between writing its checkpoint and logging it) are logged on start,
    steps logged before a kill are not logged twice, and the figures are drawn from the
    trainer's full history.

    Args:
        run: The started run to log into.
        log_every: Log the per-step loss and learning rate every this many optimizer steps.

    Example:
        >>> with TrackedRun(config=cfg) as run:  # doctest: +SKIP
        ...     trainer.attach(MLflowHandler(run, log_every=20)).run()
    """

    def __init__(self, run: TrackedRun, *, log_every: int = 10) -> None:
        if log_every < 1:
            raise ConfigError(f"log_every must be at least 1, got {log_every}")
        self.run = run
        self.log_every = log_every
        self._logged_up_to = 0

    def attach(self, trainer: Trainer) -> None:
        """Subscribe to the trainer's iteration, epoch-end and completion events."""
        trainer.on(Event.STARTED, self.catch_up)
        trainer.on(Event.ITERATION_COMPLETED, self.log_step)
        trainer.on(Event.CHECKPOINT_DUE, self.log_epoch)
        trainer.on(Event.COMPLETED, self.log_summary)

    def catch_up(self, trainer: Trainer) -> None:
        """On resume: log epochs of the history the run lacks; skip steps it already has."""
        if trainer.state.epoch == 0:
            return
        logged = self.run.logged_steps(EPOCH_METRIC_NAMES["loss"])
        for record in trainer.state.history:
            if int(record["epoch"]) not in logged:
                self._log_record(record)
        self._logged_up_to = max(self.run.logged_steps(STEP_LOSS), default=0)

    def log_step(self, trainer: Trainer) -> None:
        """Per-step loss and learning rate, every ``log_every`` steps."""
        step = trainer.state.iteration
        if step % self.log_every == 0 and step > self._logged_up_to:
            lr = float(trainer.optimizer.param_groups[0]["lr"])
            self.run.log_metrics({STEP_LOSS: trainer.state.last_loss, STEP_LR: lr}, step=step)

    def log_epoch(self, trainer: Trainer) -> None:
        """The epoch's history record and the best monitored metric so far."""
        best = None
        if trainer.state.best_metric is not None:
            best = {f"best_val_{trainer.monitor}": trainer.state.best_metric}
        self._log_record(trainer.state.history[-1], best)

    def _log_record(self, record: dict[str, float], extra: dict[str, float] | None = None) -> None:
        metrics = {EPOCH_METRIC_NAMES.get(k, k): v for k, v in record.items() if k != "epoch"}
        self.run.log_metrics({**metrics, **(extra or {})}, step=int(record["epoch"]))

    def log_summary(self, trainer: Trainer) -> None:
        """Why training stopped, the best epoch, and the loss and metric curves."""
        from minivess.tracking.plots import loss_figure, metrics_figure

        tags = {"stop_reason": trainer.state.stop_reason}
        if trainer.state.best_epoch is not None:
            tags["best_epoch"] = str(trainer.state.best_epoch)
        self.run.set_tags(tags)
        history = trainer.state.history
        if not history:
            return
        self.run.log_figure(loss_figure(history), "plots/loss.png")
        figure = metrics_figure(history)
        if figure is not None:
            self.run.log_figure(figure, "plots/val_metrics.png")
