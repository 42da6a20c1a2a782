"""A whole training run from a config: outputs, determinism, and self-sufficient checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from minivess.adapters import load_checkpoint
from minivess.config.experiment import compose
from minivess.data.prepare import PreparedDataset
from minivess.training.engine import Trainer
from minivess.training.events import Event
from minivess.training.recipe import train


class StopAfter:
    """Ends a run after ``epochs`` epochs, as a kill at an epoch boundary would."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def attach(self, trainer: Trainer) -> None:
        trainer.on(Event.CHECKPOINT_DUE, self._stop)

    def _stop(self, trainer: Trainer) -> None:
        trainer.state.should_stop = trainer.state.epoch >= self.epochs


def tiny_overrides(prepared: PreparedDataset, *extra: str) -> list[str]:
    """A seconds-long SegResNet run on the synthetic fixture dataset.

    Every setting the stored reference prediction depends on is pinned here, so that tuning a
    profile's defaults does not change these runs.
    """
    return [
        f"data.dataset_dir={prepared.out}",
        f"data.splits_file={prepared.out / 'splits.json'}",
        "data.patch_size=[32,32,16]",
        "data.augmentation.enabled=false",
        "inference.roi_size=[64,64,16]",
        "inference.precision=fp32",
        "model.params.init_filters=4",
        "model.params.num_groups=4",
        "training.max_epochs=3",
        "training.val_every_n_epochs=1",
        "training.precision=fp32",
        "training.scheduler.warmup_epochs=1",
        "training.batch_size=2",
        "data.samples_per_volume=1",
        "training.optimizer.name=adamw",
        "training.optimizer.lr=2e-3",
        "training.loss.name=dice_ce",
        *extra,
    ]


def test_run_writes_config_history_and_self_describing_checkpoints(
    prepared_synthetic: PreparedDataset, tmp_path: Path
) -> None:
    cfg = compose(tiny_overrides(prepared_synthetic))
    result = train(cfg, tmp_path / "run")

    assert json.loads((tmp_path / "run" / "config.json").read_text())["name"] == cfg.name
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1.0, 2.0, 3.0]
    assert all("val_dice" in r for r in history)

    _, info = load_checkpoint(result.best_checkpoint)
    assert info.adapter == "segresnet"
    assert info.data_version == prepared_synthetic.version
    assert info.extra["preprocessing"] == {"percentile_lower": 1.0, "percentile_upper": 99.8}
    assert info.extra["inference"]["roi_size"] == [64, 64, 16]
    assert info.extra["trainer"]["train_state"]["best_epoch"] == result.state.best_epoch


def test_same_seed_gives_identical_runs(
    prepared_synthetic: PreparedDataset, tmp_path: Path
) -> None:
    overrides = tiny_overrides(prepared_synthetic, "data.augmentation.enabled=true")
    first = train(compose(overrides), tmp_path / "a").state
    second = train(compose(overrides), tmp_path / "b").state
    assert first.history[-1]["loss"] == second.history[-1]["loss"]
    assert [r["val_dice"] for r in first.history] == [r["val_dice"] for r in second.history]
    other = train(compose([*overrides, "training.seed=1"]), tmp_path / "c").state
    assert other.history[-1]["loss"] != first.history[-1]["loss"]


@pytest.mark.slow
def test_resumed_run_matches_uninterrupted_run(
    prepared_synthetic: PreparedDataset, tmp_path: Path
) -> None:
    overrides = tiny_overrides(prepared_synthetic, "data.augmentation.enabled=true")
    full = train(compose(overrides), tmp_path / "full")

    short = train(compose(overrides), tmp_path / "part", handlers=(StopAfter(2),))
    assert short.state.epoch == 2
    resumed = train(
        compose(overrides), tmp_path / "part", resume_from=tmp_path / "part/checkpoints/last.pt"
    )
    assert resumed.state.epoch == 3
    assert [(r["loss"], r["val_dice"], r["lr"]) for r in resumed.state.history] == [
        (r["loss"], r["val_dice"], r["lr"]) for r in full.state.history
    ]
    a, _ = load_checkpoint(full.run_dir / "checkpoints/last.pt")
    b, _ = load_checkpoint(resumed.run_dir / "checkpoints/last.pt")
    for x, y in zip(a.network.state_dict().values(), b.network.state_dict().values(), strict=True):
        assert torch.equal(x, y)
