from __future__ import annotations

import pytest
from pydantic import ValidationError

from minivess.config.training import (
    LossConfig,
    OptimizerConfig,
    SchedulerConfig,
    TrainingConfig,
)


def test_defaults_are_valid_and_fill_choice_specific_options() -> None:
    cfg = TrainingConfig()

    assert cfg.optimizer.name == "adamw"
    assert cfg.optimizer.momentum is None
    assert cfg.scheduler.patience is None
    assert cfg.loss.cldice_alpha is None
    assert TrainingConfig.model_validate(cfg.model_dump()) == cfg


def test_every_field_is_documented() -> None:
    for model in (TrainingConfig, OptimizerConfig, SchedulerConfig, LossConfig):
        undocumented = [name for name, f in model.model_fields.items() if not f.description]
        assert not undocumented, f"{model.__name__}: {undocumented}"


@pytest.mark.parametrize(
    ("config", "field", "filled"),
    [
        (OptimizerConfig(name="sgd"), "momentum", 0.9),
        (SchedulerConfig(name="plateau"), "patience", 5),
        (SchedulerConfig(name="plateau"), "factor", 0.5),
        (LossConfig(name="cldice"), "cldice_alpha", 0.5),
        (LossConfig(name="cldice"), "skeleton_iterations", 3),
    ],
)
def test_choice_specific_options_get_defaults_for_their_choice(
    config: object, field: str, filled: float
) -> None:
    assert getattr(config, field) == filled


@pytest.mark.parametrize(
    ("model", "values", "path"),
    [
        (OptimizerConfig, {"name": "adamw", "momentum": 0.9}, "momentum"),
        (SchedulerConfig, {"name": "warmup_cosine", "patience": 3}, "patience"),
        (SchedulerConfig, {"name": "none", "factor": 0.1}, "factor"),
        (LossConfig, {"name": "dice_ce", "cldice_alpha": 0.3}, "cldice_alpha"),
        (LossConfig, {"name": "dice", "skeleton_iterations": 5}, "skeleton_iterations"),
    ],
)
def test_options_of_another_choice_are_rejected(
    model: type[OptimizerConfig | SchedulerConfig | LossConfig],
    values: dict[str, object],
    path: str,
) -> None:
    with pytest.raises(ValidationError, match="only applies to") as err:
        model.model_validate(values)
    assert err.value.errors()[0]["loc"] == (path,)


def test_warmup_only_with_the_cosine_schedule() -> None:
    with pytest.raises(ValidationError, match="warmup_epochs only applies to 'warmup_cosine'"):
        SchedulerConfig(name="plateau", warmup_epochs=2)


def test_warmup_must_end_before_training_does() -> None:
    TrainingConfig(max_epochs=10, scheduler={"warmup_epochs": 9})
    with pytest.raises(ValidationError, match=r"warmup_epochs \(10\) must be smaller"):
        TrainingConfig(max_epochs=10, scheduler={"warmup_epochs": 10})


def test_fp16_needs_cuda() -> None:
    TrainingConfig(precision="fp16", device="cuda:1")
    with pytest.raises(ValidationError, match="fp16' needs a CUDA device"):
        TrainingConfig(precision="fp16", device="cpu")


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_valid_devices(device: str) -> None:
    assert TrainingConfig(device=device).device == device


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "mps", "CPU"])
def test_invalid_devices(device: str) -> None:
    with pytest.raises(ValidationError, match="device"):
        TrainingConfig(device=device)


@pytest.mark.parametrize(
    ("values", "path"),
    [
        ({"optimizer": {"lr": 0}}, ("optimizer", "lr")),
        ({"optimizer": {"name": "lion"}}, ("optimizer", "name")),
        ({"scheduler": {"name": "step"}}, ("scheduler", "name")),
        ({"loss": {"name": "tversky"}}, ("loss", "name")),
        ({"precision": "int8"}, ("precision",)),
        ({"batch_size": 0}, ("batch_size",)),
        ({"max_time_minutes": 0}, ("max_time_minutes",)),
        ({"bach_size": 2}, ("bach_size",)),
    ],
)
def test_invalid_values_name_the_field(values: dict[str, object], path: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as err:
        TrainingConfig.model_validate(values)
    assert err.value.errors()[0]["loc"] == path


def test_configs_are_immutable() -> None:
    cfg = TrainingConfig()
    with pytest.raises(ValidationError):
        cfg.max_epochs = 5  # type: ignore[misc]
