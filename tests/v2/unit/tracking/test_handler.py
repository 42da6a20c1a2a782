"""MLflowHandler on a real Trainer: every epoch and step logged, at the right step, unchanged."""

from __future__ import annotations

import copy

import mlflow
import pytest
import torch
from torch import nn

from minivess.errors import ConfigError
from minivess.tracking import MLflowHandler, TrackedRun
from minivess.training.engine import Trainer
from minivess.training.events import Event
from minivess.training.losses import LOSS_BUILDERS
from minivess.training.optim import build_optimizer, build_scheduler

N_BATCHES = 4


class TinyAdapter:
    """A real two-class 3D conv net with the adapter surface the engine uses."""

    def __init__(self) -> None:
        self.network = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


class SeededLoader:
    def __init__(self) -> None:
        self.generator = torch.Generator().manual_seed(0)

    def reseed(self, epoch: int) -> None:
        self.generator.manual_seed(1000 + epoch)

    def __iter__(self):
        for _ in range(N_BATCHES):
            image = torch.rand(2, 1, 8, 8, 8, generator=self.generator)
            yield {"image": image, "label": (image > 0.6).float()}


def _dice(adapter: TinyAdapter) -> dict[str, float]:
    image = torch.rand(1, 1, 8, 8, 8, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        pred = adapter.forward(image).argmax(1)
    truth = (image[:, 0] > 0.6).long()
    inter = (pred * truth).sum().item()
    return {"dice": 2 * inter / max(1, pred.sum().item() + truth.sum().item()), "recall": 0.5}


def _trainer(max_epochs: int) -> Trainer:
    torch.manual_seed(0)
    adapter, loader = TinyAdapter(), SeededLoader()
    optimizer = build_optimizer("adamw", adapter.network.parameters(), lr=1e-2)
    scheduler = build_scheduler(
        "warmup_cosine", optimizer, total_steps=N_BATCHES * max_epochs, warmup_steps=2
    )
    return Trainer(
        adapter,
        optimizer,
        LOSS_BUILDERS["dice_ce"](),
        loader,
        max_epochs=max_epochs,
        scheduler=scheduler,
        validator=_dice,
        epoch_seed=loader.reseed,
    )


def _history(run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in mlflow.MlflowClient().get_metric_history(run_id, key)]


def test_logged_histories_equal_the_trainer_history(tracking: str) -> None:
    trainer = _trainer(2)
    step_losses: list[tuple[int, float]] = []
    trainer.on(
        Event.ITERATION_COMPLETED,
        lambda t: step_losses.append((t.state.iteration, t.state.last_loss)),
    )
    with TrackedRun("exp", log_system_metrics=False) as run:
        trainer.attach(MLflowHandler(run, log_every=1)).run()
    history = trainer.state.history
    assert len(history) == 2
    renamed = {"loss": "train_loss", "lr": "lr", "epoch_time_s": "epoch_time_s"}
    for key in ("loss", "lr", "epoch_time_s", "val_dice", "val_recall"):
        expected = [(int(r["epoch"]), r[key]) for r in history]
        assert _history(run.run_id, renamed.get(key, key)) == expected, key
    assert _history(run.run_id, "train_loss_step") == step_losses
    assert [s for s, _ in _history(run.run_id, "lr_step")] == list(range(1, 2 * N_BATCHES + 1))
    best = _history(run.run_id, "best_val_dice")
    assert best[-1] == (2, trainer.state.best_metric)
    tags = mlflow.MlflowClient().get_run(run.run_id).data.tags
    assert tags["stop_reason"] == "max_epochs"
    assert tags["best_epoch"] == str(trainer.state.best_epoch)
    plots = {f.path for f in mlflow.MlflowClient().list_artifacts(run.run_id, "plots")}
    assert plots == {"plots/loss.png", "plots/val_metrics.png"}


def test_step_metrics_are_logged_every_n_steps(tracking: str) -> None:
    trainer = _trainer(2)
    with TrackedRun("exp", log_system_metrics=False) as run:
        trainer.attach(MLflowHandler(run, log_every=3)).run()
    assert [s for s, _ in _history(run.run_id, "train_loss_step")] == [3, 6]


def test_resumed_training_continues_the_histories_without_duplicates(tracking: str) -> None:
    first = _trainer(2)
    first.on(Event.CHECKPOINT_DUE, lambda t: setattr(t.state, "should_stop", t.state.epoch == 1))
    with TrackedRun("exp", log_system_metrics=False) as run:
        first.attach(MLflowHandler(run, log_every=1)).run()
    saved = copy.deepcopy(first.state_dict())

    resumed = _trainer(2)
    resumed.load_state_dict(saved)
    with TrackedRun(resume_run_id=run.run_id, log_system_metrics=False) as again:
        resumed.attach(MLflowHandler(again, log_every=1)).run()
    expected = [(int(r["epoch"]), r["loss"]) for r in resumed.state.history]
    assert _history(run.run_id, "train_loss") == expected
    steps = [s for s, _ in _history(run.run_id, "train_loss_step")]
    assert steps == list(range(1, 2 * N_BATCHES + 1))


def test_log_every_must_be_positive(tracking: str) -> None:
    with pytest.raises(ConfigError, match="log_every"):
        MLflowHandler(TrackedRun("exp"), log_every=0)
