"""The training loop: event order, accumulation, stopping, and exact resume at epoch boundaries."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from minivess.training.engine import Trainer
from minivess.training.events import Event
from minivess.training.handlers.early_stopping import EarlyStopping, TimeLimit
from minivess.training.losses import LOSS_BUILDERS
from minivess.training.optim import build_optimizer, build_scheduler


class TinyAdapter:
    """A real (small) two-class 3D conv net with the adapter surface the engine uses."""

    def __init__(self) -> None:
        self.network = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


class SeededLoader:
    """Batches that are a pure function of (seed, epoch), like the project's loaders."""

    def __init__(self, n_batches: int = 4) -> None:
        self.n_batches = n_batches
        self.generator = torch.Generator().manual_seed(0)

    def reseed(self, epoch: int) -> None:
        self.generator.manual_seed(1000 + epoch)

    def __iter__(self):
        for _ in range(self.n_batches):
            image = torch.rand(2, 1, 8, 8, 8, generator=self.generator)
            yield {"image": image, "label": (image > 0.6).float()}


def _trainer(max_epochs: int, **kwargs) -> Trainer:
    torch.manual_seed(0)
    adapter = TinyAdapter()
    loader = SeededLoader()
    optimizer = build_optimizer("adamw", adapter.network.parameters(), lr=1e-2)
    scheduler = build_scheduler(
        "warmup_cosine", optimizer, total_steps=4 * max_epochs, warmup_steps=2
    )
    return Trainer(
        adapter,
        optimizer,
        LOSS_BUILDERS["dice_ce"](),
        loader,
        max_epochs=max_epochs,
        scheduler=scheduler,
        epoch_seed=loader.reseed,
        **kwargs,
    )


def _dice_validator(adapter: TinyAdapter) -> dict[str, float]:
    gen = torch.Generator().manual_seed(7)
    image = torch.rand(1, 1, 8, 8, 8, generator=gen)
    with torch.no_grad():
        pred = adapter.forward(image).argmax(1)
    truth = (image[:, 0] > 0.6).long()
    inter = (pred * truth).sum().item()
    return {"dice": 2 * inter / max(1, pred.sum().item() + truth.sum().item())}


def test_events_fire_in_order_and_loss_decreases() -> None:
    trainer = _trainer(3, validator=_dice_validator)
    seen: list[str] = []
    for event in Event:
        trainer.on(event, lambda t, e=event: seen.append(e.value))
    state = trainer.run()
    assert seen[0] == "started"
    assert seen[-1] == "completed"
    per_epoch = [
        "epoch_started",
        *["iteration_completed"] * 4,
        "epoch_completed",
        "validation_completed",
        "checkpoint_due",
    ]
    assert seen[1:-1] == per_epoch * 3
    assert state.iteration == 12
    assert state.stop_reason == "max_epochs"
    assert state.history[-1]["loss"] < state.history[0]["loss"]
    assert "val_dice" in state.history[-1]


def test_gradient_accumulation_takes_one_step_per_group() -> None:
    trainer = _trainer(1, grad_accumulation_steps=3)
    assert trainer.run().iteration == 2  # 4 micro-batches: one full group of 3, one remainder


def test_resume_at_epoch_boundary_equals_uninterrupted_run() -> None:
    full = _trainer(4, validator=_dice_validator)
    full.run()

    first = _trainer(4, validator=_dice_validator)
    first.on(Event.CHECKPOINT_DUE, lambda t: setattr(t.state, "should_stop", t.state.epoch == 2))
    first.run()
    saved = copy.deepcopy(first.state_dict())

    resumed = _trainer(4, validator=_dice_validator)
    resumed.load_state_dict(saved)
    resumed.run()

    for a, b in zip(
        full.adapter.network.state_dict().values(),
        resumed.adapter.network.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)
    assert [r["loss"] for r in resumed.state.history] == [r["loss"] for r in full.state.history]
    assert resumed.state.metrics == full.state.metrics


def test_early_stopping_and_time_limit_end_the_run() -> None:
    never_better = _trainer(10, validator=lambda a: {"dice": 0.5})
    never_better.attach(EarlyStopping(patience=2))
    state = never_better.run()
    assert state.stop_reason == "early_stopping"
    assert state.epoch == 3

    timed = _trainer(10)
    timed.attach(TimeLimit(minutes=0.0))
    assert timed.run().stop_reason == "time_limit"


def test_bf16_autocast_trains_on_cpu() -> None:
    state = _trainer(1, precision="bf16").run()
    assert state.iteration == 4
    assert torch.isfinite(torch.tensor(state.epoch_loss))


@pytest.mark.parametrize("name", sorted(LOSS_BUILDERS))
def test_every_loss_trains(name: str) -> None:
    torch.manual_seed(0)
    adapter = TinyAdapter()
    opt = build_optimizer("adam", adapter.network.parameters(), lr=1e-2)
    trainer = Trainer(adapter, opt, LOSS_BUILDERS[name](), SeededLoader(), max_epochs=2)
    state = trainer.run()
    assert state.history[1]["loss"] < state.history[0]["loss"]


class MetaLoader(SeededLoader):
    """The same batches as MONAI's loaders yield them: ``MetaTensor`` s with an affine."""

    def __iter__(self):
        from monai.data import MetaTensor

        for batch in super().__iter__():
            yield {key: MetaTensor(value, affine=torch.eye(4)) for key, value in batch.items()}


def test_metatensor_batches_train_as_plain_tensors_with_the_same_result() -> None:
    seen: list[type] = []

    def recording_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        seen.extend([type(logits), type(target)])
        return LOSS_BUILDERS["dice_ce"]()(logits, target)

    runs = []
    for loader in (SeededLoader(), MetaLoader()):
        torch.manual_seed(0)
        adapter = TinyAdapter()
        adapter.network.register_forward_pre_hook(lambda _m, args: seen.append(type(args[0])))
        optimizer = build_optimizer("adamw", adapter.network.parameters(), lr=1e-2)
        trainer = Trainer(
            adapter, optimizer, recording_loss, loader, max_epochs=2, epoch_seed=loader.reseed
        )
        runs.append((trainer.run(), adapter))

    # The network and the loss never see MONAI's metadata-carrying subclass (its
    # __torch_function__ cost ~18% of a SegResNet step) ...
    assert set(seen) == {torch.Tensor}
    # ... and stripping it changes nothing the run learns.
    (plain_state, plain), (meta_state, meta) = runs
    assert [r["loss"] for r in meta_state.history] == [r["loss"] for r in plain_state.history]
    for a, b in zip(plain.network.parameters(), meta.network.parameters(), strict=True):
        assert torch.equal(a, b)
