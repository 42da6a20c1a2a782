"""One experiment, fully described: data, model, inference, training and tracking.

:class:`ExperimentConfig` is the root pydantic model. Experiments are assembled with Hydra
(through hydra-zen) from the presets in :mod:`minivess.config.presets` plus command-line style
overrides, then validated by pydantic:

- :func:`compose` returns one validated config, e.g.
  ``compose(["model=swinunetr", "training.max_epochs=3"])``;
- :func:`launch_experiment` runs a task on one config, or on every point of a sweep
  (``multirun=True`` with ``training.seed=0,1,2``), writing Hydra's records to a folder the
  caller chooses.

Every invalid value reaches the caller as a :class:`~minivess.errors.ConfigError` naming the
field path, e.g. ``training.optimizer.lr: Input should be greater than 0``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any, Self, cast

from hydra import compose as hydra_compose
from hydra import initialize
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn
from hydra.errors import HydraException, MissingConfigException
from hydra_zen import instantiate, launch
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from minivess.config.data import DataConfig
from minivess.config.model import InferenceConfig, ModelConfig
from minivess.config.training import TrainingConfig
from minivess.config.validation import describe_validation_error
from minivess.errors import ConfigError

HYDRA_VERSION_BASE = "1.3"
_UNSAFE_OVERRIDE_CHARS = re.compile(r"['\\]|\$\{")


class TrackingConfig(BaseModel):
    """Experiment tracking (MLflow) of the run; where the server is comes from the settings."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, use_attribute_docstrings=True
    )

    enabled: bool = True
    """Log parameters, metrics and the model to the tracking server."""
    experiment: str | None = Field(default=None, min_length=1)
    """MLflow experiment name; ``None`` uses the deployment setting ``tracking.experiment``."""
    register_model: str | None = Field(default="minivess", min_length=1)
    """Registered-model name the trained model is registered under; ``None``: do not register."""
    promotion_metric: str = Field(default="best_val_dice", min_length=1)
    """Logged validation metric (higher is better) that decides whether a new model version
    replaces the current champion."""


class ExperimentConfig(BaseModel):
    """Everything one training run needs, validated together.

    Besides each section's own rules, the training patch and the inference window must suit
    the chosen adapter's size rule (e.g. SwinUNETR: every axis a multiple of 32).
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, use_attribute_docstrings=True
    )

    name: str = Field(default="minivess", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """Run name (letters, digits, ``.``, ``_``, ``-``): used in run names and folders."""
    data: DataConfig
    """Training data, patch sampling and augmentation."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    """Network adapter and its hyper-parameters."""
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    """Sliding-window inference used for validation and prediction."""
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    """Training loop, optimiser, schedule and loss."""
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    """Experiment tracking."""

    @model_validator(mode="after")
    def _sizes_suit_the_model(self) -> Self:
        self.model.check_size(self.data.patch_size, "data.patch_size")
        self.model.check_size(self.inference.roi_size, "inference.roi_size")
        return self


def compose(overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The experiment the presets and ``overrides`` describe, validated.

    Args:
        overrides: Hydra overrides, e.g. ``["profile=full", "model=swinunetr",
            "training.optimizer.lr=1e-3", "data.patch_size=[64,64,32]"]``. Sweeps
            (``a=1,2``) need :func:`launch_experiment` with ``multirun=True``.

    Returns:
        The validated config.

    Raises:
        ConfigError: An unknown preset or key, a malformed override, or an invalid value; the
            message names the field path.

    Example:
        >>> cfg = compose(["training.max_epochs=3"])  # doctest: +SKIP
        >>> cfg.training.max_epochs, cfg.model.name  # doctest: +SKIP
        (3, 'segresnet')
    """
    from minivess.config.presets import PRIMARY_CONFIG, register_configs  # imports this module

    register_configs()
    already = GlobalHydra.instance().is_initialized()  # e.g. called inside a launched job
    with (
        _hydra_errors(),
        nullcontext() if already else initialize(version_base=HYDRA_VERSION_BASE),
    ):
        cfg = hydra_compose(config_name=PRIMARY_CONFIG, overrides=list(overrides))
    return to_experiment(cfg)


def to_experiment(cfg: DictConfig) -> ExperimentConfig:
    """Validate a composed Hydra config into an :class:`ExperimentConfig`.

    Args:
        cfg: The config Hydra composed from the primary config (as a task receives it).

    Returns:
        The validated config.

    Raises:
        ConfigError: A value is missing or invalid; the message names the field path.
    """
    with _hydra_errors():
        try:
            experiment = instantiate(cfg)
        except HydraException as exc:
            if isinstance(exc.__cause__, ValidationError):
                raise ConfigError(describe_validation_error(exc.__cause__)) from None
            raise
    if not isinstance(experiment, ExperimentConfig):
        raise ConfigError(f"config does not describe an ExperimentConfig: {type(experiment)}")
    return experiment


def launch_experiment(
    task: Callable[[ExperimentConfig], Any],
    overrides: Sequence[str] = (),
    *,
    output_dir: str | Path,
    multirun: bool = False,
) -> list[Any]:
    """Run ``task`` on the composed experiment, or on every experiment of a sweep.

    Hydra records each job's composed config and overrides (``.hydra/``) under
    ``output_dir`` (one numbered subfolder per job in a sweep); the working directory is not
    changed and nothing is written to ``./outputs``. Inside ``task``,
    :func:`job_output_dir` gives the job's folder.

    Args:
        task: Called with each validated config. Define it in an importable module.
        overrides: Hydra overrides; with ``multirun=True`` comma-separated values sweep, e.g.
            ``["training.seed=0,1,2"]`` or ``["model=segresnet,swinunetr"]``.
        output_dir: Folder for Hydra's records (created if needed).
        multirun: Run a sweep over every combination of comma-separated values.

    Returns:
        ``task``'s return values, one per job, in job order.

    Raises:
        ConfigError: A bad override or value (for a sweep, the first failing job's error).
        Exception: Whatever ``task`` raised (the first failing job's error).

    Example:
        >>> seeds = launch_experiment(
        ...     lambda cfg: cfg.training.seed, ["training.seed=0,1"], output_dir="runs/sweep",
        ...     multirun=True)  # doctest: +SKIP
        >>> seeds  # doctest: +SKIP
        [0, 1]
    """
    from minivess.config.presets import PRIMARY_CONFIG, PRIMARY_NODE, register_configs

    if not multirun:
        compose(overrides)  # fail fast, before Hydra creates any folder
    register_configs()
    out = Path(output_dir).absolute()
    if _UNSAFE_OVERRIDE_CHARS.search(str(out)):
        raise ConfigError(f"output_dir {out}: quotes, backslashes and '${{' are not supported")
    hydra_overrides = [
        f"hydra.run.dir='{out}'",
        f"hydra.sweep.dir='{out}'",
        "hydra.sweep.subdir=${hydra.job.num}",
        "hydra.job.chdir=False",
        # Logging belongs to the application: Hydra must neither reconfigure it nor add files.
        "hydra/hydra_logging=none",
        "hydra/job_logging=none",
    ]

    def run_job(cfg: DictConfig) -> Any:
        return task(to_experiment(cfg))

    run = partial(
        launch,
        PRIMARY_NODE,
        run_job,
        overrides=[*hydra_overrides, *overrides],
        version_base=HYDRA_VERSION_BASE,
        config_name=PRIMARY_CONFIG,
        job_name="minivess",
        with_log_configuration=False,
    )
    with _hydra_errors():
        if multirun:  # a list of job batches
            batches = cast(list[list[JobReturn]], run(multirun=True))
            jobs = [job for batch in batches for job in batch]
        else:
            jobs = [run(multirun=False)]
    return [job.return_value for job in jobs]


def job_output_dir() -> Path:
    """The running job's output folder (inside a task started by :func:`launch_experiment`).

    Raises:
        ConfigError: Not called from inside a launched job.
    """
    if not HydraConfig.initialized():
        raise ConfigError("job_output_dir() only works inside a task run by launch_experiment")
    return Path(HydraConfig.get().runtime.output_dir)


@contextmanager
def _hydra_errors() -> Iterator[None]:
    """Re-raise Hydra and OmegaConf composition errors as one-line :class:`ConfigError`."""
    try:
        yield
    except MissingConfigException as exc:
        raise ConfigError(_missing_preset(exc)) from None
    except MissingMandatoryValue as exc:
        key = exc.full_key
        raise ConfigError(
            f"{key}: no value; choose a preset that sets it or add {key}=..."
        ) from None
    except (HydraException, OmegaConfBaseException) as exc:
        cause = exc.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        reason = f"; {_one_line(str(cause)).split('; ')[0]}" if cause is not None else ""
        raise ConfigError(_one_line(str(exc)) + reason) from None


def _missing_preset(exc: MissingConfigException) -> str:
    options = ", ".join(exc.options or [])
    name = (exc.missing_cfg_file or "").strip("/")
    group, _, preset = name.rpartition("/")
    if group and options:
        return f"no {group} preset {preset!r}; choose {group}=<name> from: {options}"
    return _one_line(str(exc))


def _one_line(message: str) -> str:
    lines = [line.strip().rstrip(".") for line in message.splitlines() if line.strip()]
    return "; ".join(lines)
