from __future__ import annotations

from pathlib import Path

import pytest

from minivess.adapters import ADAPTERS
from minivess.config.data import DataConfig
from minivess.config.experiment import (
    ExperimentConfig,
    compose,
    job_output_dir,
    launch_experiment,
)
from minivess.config.settings import get_settings
from minivess.config.training import TrainingConfig
from minivess.errors import ConfigError


def record_seed(cfg: ExperimentConfig) -> int:
    """A real task: leaves a file in its job folder and returns the seed it was given."""
    (job_output_dir() / "seed.txt").write_text(str(cfg.training.seed), encoding="utf-8")
    return cfg.training.seed


def compose_inside(cfg: ExperimentConfig) -> int:
    """A task that composes another experiment while Hydra is running it."""
    return compose([f"training.seed={cfg.training.seed + 1}"]).training.seed


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory (so stray ./outputs folders would show) with fresh settings."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    get_settings(reload=True)
    return cwd


def test_defaults_compose_to_the_quick_segresnet_run() -> None:
    cfg = compose()

    assert cfg.model.name == "segresnet"
    assert cfg.model.params["init_filters"] == 16
    assert cfg.data.patch_size == (96, 96, 16)
    assert cfg.data.dataset_dir == get_settings().data.root / "vesselnn"
    assert cfg.data.splits_file == cfg.data.dataset_dir / "splits.json"
    training = cfg.training
    assert (training.precision, training.device, training.batch_size) == ("bf16", "cpu", 1)
    assert (training.optimizer.name, training.optimizer.lr) == ("adamw", 2e-3)
    assert (training.scheduler.name, training.loss.name) == ("warmup_cosine", "dice_ce")
    # 720 steps of 2 patches (one training volume per step, two patches from it), and a
    # training-time limit that leaves room for preparation and evaluation within 15 minutes
    assert cfg.data.samples_per_volume * training.batch_size == 2
    assert training.max_epochs * 4 == 720
    assert training.max_time_minutes == 13
    assert cfg.inference.roi_size == cfg.data.patch_size
    # what runs and checkpoints record (JSON) validates back to the same config
    assert ExperimentConfig.model_validate_json(cfg.model_dump_json()) == cfg


def test_primary_config_takes_its_values_from_the_pydantic_defaults() -> None:
    cfg = compose(["~profile"])

    assert cfg.training == TrainingConfig()
    assert cfg.data.augmentation == DataConfig.model_fields["augmentation"].default


def test_overrides_change_fields() -> None:
    cfg = compose(
        [
            "training.max_epochs=3",
            "training.optimizer.lr=1e-4",
            "training.optimizer.name=sgd",
            "data.patch_size=[64,64,16]",
            "model.params.init_filters=8",
            "model.params.dropout_prob=0.1",
        ]
    )

    assert cfg.training.max_epochs == 3
    assert cfg.training.optimizer.lr == 1e-4
    assert cfg.training.optimizer.momentum == 0.9  # filled in for sgd
    assert cfg.data.patch_size == (64, 64, 16)
    assert cfg.model.params["init_filters"] == 8
    assert cfg.model.params["dropout_prob"] == 0.1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["training.optimizer.lr=-1"], r"^training\.optimizer\.lr: Input should be greater than 0"),
        (["training.max_epochs=abc"], r"^training\.max_epochs: Input should be a valid integer"),
        (["+training.epochs=3"], r"^training\.epochs: Extra inputs are not permitted"),
        (["training.epochs=3"], r"training\.epochs.*not in struct"),
        (["training.device=gpu"], r"^training\.device: String should match pattern"),
        (
            ["training.scheduler.warmup_epochs=450"],
            r"^training: scheduler\.warmup_epochs \(450\) must be smaller than max_epochs",
        ),
        (
            ["model.params.init_filters=7"],
            r"^model\.params: invalid segresnet parameters: init_filters \(7\) must be a multiple",
        ),
        (
            ["+model.params.feature_size=24"],
            r"^model\.params: .*feature_size: Extra inputs .* choose it with model=<name>",
        ),
        (["data.dataset_dir=???"], r"^data\.dataset_dir: no value"),
        (["training.seed=0,1"], r"To sweep over it"),
    ],
)
def test_invalid_overrides_name_the_field(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        compose(overrides)
    assert "\n" not in str(err.value)


def test_unknown_adapter_lists_the_registered_names() -> None:
    with pytest.raises(ConfigError, match=r"^model\.name: unknown model adapter 'unet'") as err:
        compose(["model.name=unet"])
    for name in ADAPTERS.names():
        assert name in str(err.value)

    with pytest.raises(ConfigError, match=r"no model preset 'unet'.*segresnet, swinunetr"):
        compose(["model=unet"])


def test_patch_and_window_must_suit_the_adapter() -> None:
    with pytest.raises(
        ConfigError, match=r"^data\.patch_size \(96, 96, 16\) does not suit swinunetr"
    ):
        compose(["model=swinunetr", "data.patch_size=[96,96,16]"])
    with pytest.raises(ConfigError, match=r"^inference\.roi_size \(64, 64, 20\) does not suit"):
        compose(["inference.roi_size=[64,64,20]"])

    with pytest.raises(ValueError, match=r"nearest valid size: \(96, 96, 32\)"):
        ExperimentConfig(
            data={"dataset_dir": "d", "splits_file": "d/s.json", "patch_size": (96, 96, 20)},
            model={"name": "swinunetr"},
        )


@pytest.mark.parametrize("profile", ["quick", "full"])
@pytest.mark.parametrize("model", ["segresnet", "swinunetr"])
def test_every_profile_composes_with_every_model(profile: str, model: str) -> None:
    cfg = compose([f"profile={profile}", f"model={model}"])

    assert cfg.model.name == model
    assert cfg.name == profile
    if model == "swinunetr":
        assert cfg.data.patch_size == cfg.inference.roi_size == (64, 64, 32)


def test_dataset_location_comes_from_the_deployment_settings(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINIVESS_DATA__ROOT", str(workdir / "datasets"))
    get_settings(reload=True)

    cfg = compose(["data=vesselnn"])

    assert cfg.data.dataset_dir == workdir / "datasets" / "vesselnn"
    with pytest.raises(ConfigError, match="secrets cannot go into configs"):
        compose(["data.dataset_dir=${minivess.settings:secrets.s3_access_key_id}"])


def test_multirun_runs_the_task_once_per_seed(workdir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"

    seeds = launch_experiment(
        record_seed, ["training.seed=0,1", "training.max_epochs=3"], output_dir=out, multirun=True
    )

    assert seeds == [0, 1]
    assert [(out / str(job) / "seed.txt").read_text() for job in (0, 1)] == ["0", "1"]
    assert (out / "0" / ".hydra" / "config.yaml").is_file()
    assert list(workdir.iterdir()) == []  # no ./outputs or ./multirun in the working directory


def test_single_run_returns_one_value_and_records_its_config(workdir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"

    assert launch_experiment(record_seed, ["training.seed=7"], output_dir=out) == [7]
    assert (out / "seed.txt").read_text() == "7"
    assert "training.seed=7" in (out / ".hydra" / "overrides.yaml").read_text()
    assert list(workdir.iterdir()) == []


def test_compose_works_inside_a_launched_task(workdir: Path, tmp_path: Path) -> None:
    assert launch_experiment(compose_inside, ["training.seed=4"], output_dir=tmp_path) == [5]


def test_invalid_values_in_a_sweep_reach_the_caller_as_config_errors(
    workdir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"^training\.optimizer\.lr: Input should be greater"):
        launch_experiment(
            record_seed,
            ["training.seed=0,1", "training.optimizer.lr=0"],
            output_dir=tmp_path / "sweep",
            multirun=True,
        )
    with pytest.raises(ConfigError, match=r"^training\.optimizer\.lr"):
        launch_experiment(record_seed, ["training.optimizer.lr=0"], output_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # a single run is validated before Hydra starts


def test_job_output_dir_outside_a_job_is_an_error() -> None:
    with pytest.raises(ConfigError, match="only works inside a task"):
        job_output_dir()
