"""The training loop: it fires events and knows nothing of tracking, checkpoints or progress bars.

Handlers (``minivess.training.handlers``) attach to a :class:`Trainer` and react to
:class:`~minivess.training.events.Event` s; see MONAI's engine/handler split.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch

from minivess.training.events import Event

Validator = Callable[[Any], dict[str, float]]
"""Called with the adapter; returns validation metrics (higher-is-better keys are documented)."""


class Handler(Protocol):
    """Anything that subscribes itself to a trainer's events."""

    def attach(self, trainer: Trainer) -> None:
        """Register callbacks with ``trainer.on(event, callback)``."""


@dataclass
class TrainState:
    """Everything about a run's progress that a resumed run needs to continue exactly."""

    epoch: int = 0
    """Epochs completed."""
    iteration: int = 0
    """Optimizer steps completed."""
    epoch_loss: float = float("nan")
    """Mean training loss of the last completed epoch."""
    last_loss: float = float("nan")
    """Loss of the last optimizer step (before accumulation scaling)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Latest validation metrics."""
    history: list[dict[str, float]] = field(default_factory=list)
    """One record per completed epoch: epoch, loss, lr, time and validation metrics."""
    best_metric: float | None = None
    """Best value of the monitored validation metric so far."""
    best_epoch: int | None = None
    """Epoch at which ``best_metric`` was reached."""
    elapsed_s: float = 0.0
    """Training wall time accumulated over all sessions of this run."""
    should_stop: bool = False
    """Set by a handler (early stopping, time limit) to end the run after the current epoch."""
    stop_reason: str = ""
    """Why the run ended: "max_epochs", "early_stopping", "time_limit"."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-types view for checkpoints (loadable with ``torch.load(weights_only=True)``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


class Trainer:
    """Supervised training of a model adapter, epoch by epoch.

    Args:
        adapter: A :class:`~minivess.adapters.base.ModelAdapter`; only ``network`` and
            ``forward`` are used here.
        optimizer: Optimizer over ``adapter.network`` parameters.
        loss_fn: ``loss_fn(logits, target) -> scalar``; logits arrive as float32.
        train_loader: Iterable of dict batches with ``"image"`` and ``"label"`` tensors.
        max_epochs: Number of epochs to train in total (across resumes).
        scheduler: Optional LR scheduler stepped per optimizer step, or per validation when it
            is a ``ReduceLROnPlateau`` (stepped with ``monitor``).
        validator: Optional whole-volume validation, called every ``val_every`` epochs.
        monitor: Validation metric that ``ReduceLROnPlateau`` and best-tracking follow
            (higher is better).
        val_every: Validate every this many epochs (and always after the last epoch).
        precision: Resolved precision, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (CUDA only).
        grad_accumulation_steps: Micro-batches per optimizer step.
        device: Where the network and batches live.
        epoch_seed: If given, called at every epoch start with the epoch index, so that
            data order and augmentation are a pure function of (seed, epoch); this makes a run
            resumed at an epoch boundary identical to an uninterrupted one.
    """

    def __init__(
        self,
        adapter: Any,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        train_loader: Iterable[dict[str, torch.Tensor]],
        *,
        max_epochs: int,
        scheduler: Any = None,
        validator: Validator | None = None,
        monitor: str = "dice",
        val_every: int = 1,
        precision: str = "fp32",
        grad_accumulation_steps: int = 1,
        device: torch.device | str = "cpu",
        epoch_seed: Callable[[int], None] | None = None,
    ) -> None:
        self.adapter = adapter
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.train_loader = train_loader
        self.max_epochs = max_epochs
        self.scheduler = scheduler
        self.validator = validator
        self.monitor = monitor
        self.val_every = max(1, val_every)
        self.precision = precision
        self.accumulate = max(1, grad_accumulation_steps)
        self.device = torch.device(device)
        self.epoch_seed = epoch_seed
        self.state = TrainState()
        self.forward: Callable[[torch.Tensor], torch.Tensor] = adapter.forward
        """What the loop calls for logits; a DDP wrapper of ``adapter.network`` under torchrun."""
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=precision == "fp16" and self.device.type == "cuda"
        )
        self._callbacks: dict[Event, list[Callable[[Trainer], object]]] = defaultdict(list)

    # -- events ---------------------------------------------------------------------------
    def on(self, event: Event, callback: Callable[[Trainer], object]) -> None:
        """Call ``callback(trainer)`` whenever ``event`` fires, in registration order."""
        self._callbacks[event].append(callback)

    def attach(self, *handlers: Handler) -> Trainer:
        """Attach handlers; returns the trainer for chaining."""
        for handler in handlers:
            handler.attach(self)
        return self

    def fire(self, event: Event) -> None:
        """Run every callback registered for ``event``."""
        for callback in self._callbacks[event]:
            callback(self)

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> TrainState:
        """Train until ``max_epochs`` or a handler sets ``state.should_stop``."""
        try:
            self.fire(Event.STARTED)
            while self.state.epoch < self.max_epochs and not self.state.should_stop:
                self._run_epoch()
            if not self.state.stop_reason:
                self.state.stop_reason = "max_epochs"
            self.fire(Event.COMPLETED)
        except BaseException:
            self.fire(Event.EXCEPTION_RAISED)
            raise
        return self.state

    def _run_epoch(self) -> None:
        epoch = self.state.epoch
        if self.epoch_seed is not None:
            self.epoch_seed(epoch)
        self.fire(Event.EPOCH_STARTED)
        started = time.perf_counter()
        self.adapter.network.train()
        losses = self._train_steps()
        self.state.epoch = epoch + 1
        self.state.epoch_loss = float(sum(losses) / max(1, len(losses)))
        self.state.elapsed_s += time.perf_counter() - started
        self.fire(Event.EPOCH_COMPLETED)
        if self.validator is not None and self._validation_due():
            self._validate()
        self.state.history.append(self._epoch_record(time.perf_counter() - started))
        self.fire(Event.CHECKPOINT_DUE)

    def _validation_due(self) -> bool:
        epoch = self.state.epoch
        return epoch % self.val_every == 0 or epoch >= self.max_epochs

    def _autocast(self) -> AbstractContextManager[Any]:
        if self.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _train_steps(self) -> list[float]:
        losses: list[float] = []
        self.optimizer.zero_grad(set_to_none=True)
        pending = 0
        for batch in self.train_loader:
            image = plain_tensor(batch["image"]).to(self.device, non_blocking=True)
            label = plain_tensor(batch["label"]).to(self.device, non_blocking=True)
            with self._autocast():
                logits = self.forward(image)
            loss = self.loss_fn(logits.float(), label)
            self.scaler.scale(loss / self.accumulate).backward()
            losses.append(float(loss.detach()))
            pending += 1
            if pending == self.accumulate:
                self._optimizer_step(losses[-1])
                pending = 0
        if pending:
            self._optimizer_step(losses[-1])
        return losses

    def _optimizer_step(self, last_loss: float) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None and not _is_plateau(self.scheduler):
            self.scheduler.step()
        self.state.iteration += 1
        self.state.last_loss = last_loss
        self.fire(Event.ITERATION_COMPLETED)

    def _validate(self) -> None:
        assert self.validator is not None
        self.adapter.network.eval()
        metrics = self.validator(self.adapter)
        self.state.metrics = dict(metrics)
        value = metrics.get(self.monitor)
        if value is not None and (self.state.best_metric is None or value > self.state.best_metric):
            self.state.best_metric = float(value)
            self.state.best_epoch = self.state.epoch
        if self.scheduler is not None and _is_plateau(self.scheduler) and value is not None:
            self.scheduler.step(value)
        self.fire(Event.VALIDATION_COMPLETED)

    def _epoch_record(self, seconds: float) -> dict[str, float]:
        record = {
            "epoch": float(self.state.epoch),
            "loss": self.state.epoch_loss,
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "epoch_time_s": seconds,
        }
        if self.state.metrics and self._validation_due():
            record.update({f"val_{k}": float(v) for k, v in self.state.metrics.items()})
        return record

    # -- persistence -----------------------------------------------------------------------
    def state_dict(self, include_model: bool = True) -> dict[str, Any]:
        """Model, optimizer, scheduler, scaler and loop state: all a resume needs.

        Args:
            include_model: Leave the weights out when they are stored elsewhere (checkpoints
                keep them at the top level).
        """
        data = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "train_state": self.state.to_dict(),
        }
        if include_model:
            data["model"] = self.adapter.network.state_dict()
        return data

    def load_state_dict(self, data: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` produced, to continue the same run."""
        if "model" in data:
            self.adapter.network.load_state_dict(data["model"])
        self.optimizer.load_state_dict(data["optimizer"])
        if self.scheduler is not None and data.get("scheduler") is not None:
            self.scheduler.load_state_dict(data["scheduler"])
        if data.get("scaler"):
            self.scaler.load_state_dict(data["scaler"])
        self.state = TrainState.from_dict(data["train_state"])
        self.state.should_stop = False


def plain_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as a plain ``torch.Tensor`` view (no copy), whatever subclass it is.

    MONAI's loaders yield ``MetaTensor`` s, whose ``__torch_function__`` copies metadata on
    every operation: a SegResNet(16) training step on two 96x96x16 patches took 1.15 s with
    them against 0.97 s with plain tensors (bf16, 2 threads). The loss and the network need
    no metadata, so the loop strips it once per batch.
    """
    return tensor.as_subclass(torch.Tensor)


def _is_plateau(scheduler: Any) -> bool:
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
