"""How a model is trained: loop length, precision, optimiser, learning-rate schedule and loss.

The training engine builds its optimiser, scheduler and loss from exactly these names, so every
value accepted here is one the engine implements. Options that only make sense for one choice
(``momentum`` for SGD, ``patience`` for the plateau scheduler, ``cldice_alpha`` for clDice)
default to ``None`` and are filled in for that choice; setting them for another is an error
rather than a silently ignored value.

Example:
    >>> cfg = TrainingConfig(max_epochs=50, optimizer={"name": "sgd", "lr": 0.01})
    >>> cfg.optimizer.momentum
    0.9
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from minivess.adapters.inference import Precision

_MODEL_CONFIG = ConfigDict(
    extra="forbid", frozen=True, validate_default=True, use_attribute_docstrings=True
)


def _only_for(choice: str, default: object, value: object, info: ValidationInfo) -> object:
    """``value``, or ``default`` when unset, if ``info.data["name"] == choice``; else ``None``.

    Raises:
        ValueError: ``value`` was set although ``name`` is another choice.
    """
    name = info.data.get("name")
    if name == choice:
        return default if value is None else value
    if value is not None:
        raise ValueError(f"only applies to {choice!r}, not {name!r}; leave it unset (null)")
    return None


class OptimizerConfig(BaseModel):
    """The optimiser (torch.optim) and its hyper-parameters."""

    model_config = _MODEL_CONFIG

    name: Literal["adam", "adamw", "sgd"] = "adamw"
    """``adam``, ``adamw`` (decoupled weight decay) or ``sgd`` (Nesterov momentum)."""
    lr: float = Field(default=1e-3, gt=0.0)
    """Peak learning rate (reached after warm-up)."""
    weight_decay: float = Field(default=1e-5, ge=0.0)
    """L2 penalty (``adam``, ``sgd``) or decoupled weight decay (``adamw``)."""
    momentum: float | None = Field(default=None, ge=0.0, lt=1.0)
    """SGD momentum; only for ``sgd``, where unset means 0.9."""

    @field_validator("momentum")
    @classmethod
    def _sgd_only(cls, value: float | None, info: ValidationInfo) -> object:
        return _only_for("sgd", 0.9, value, info)


class SchedulerConfig(BaseModel):
    """The learning-rate schedule; the engine turns epochs into optimiser steps."""

    model_config = _MODEL_CONFIG

    name: Literal["warmup_cosine", "plateau", "none"] = "warmup_cosine"
    """``warmup_cosine``: linear warm-up then cosine decay to ``min_lr`` at ``max_epochs``;
    ``plateau``: multiply by ``factor`` after ``patience`` validations without improvement of
    the monitored (higher-is-better) metric;
    ``none``: constant."""
    warmup_epochs: int = Field(default=0, ge=0)
    """Epochs of linear warm-up to ``lr`` (``warmup_cosine`` only)."""
    min_lr: float = Field(default=1e-6, ge=0.0)
    """Floor of the learning rate (``warmup_cosine`` and ``plateau``)."""
    patience: int | None = Field(default=None, ge=0)
    """Validations without improvement before reducing; only for ``plateau`` (unset: 5)."""
    factor: float | None = Field(default=None, gt=0.0, lt=1.0)
    """Multiplier applied on a plateau; only for ``plateau`` (unset: 0.5)."""

    @field_validator("patience")
    @classmethod
    def _plateau_patience(cls, value: int | None, info: ValidationInfo) -> object:
        return _only_for("plateau", 5, value, info)

    @field_validator("factor")
    @classmethod
    def _plateau_factor(cls, value: float | None, info: ValidationInfo) -> object:
        return _only_for("plateau", 0.5, value, info)

    @model_validator(mode="after")
    def _warmup_only_for_cosine(self) -> Self:
        if self.warmup_epochs and self.name != "warmup_cosine":
            raise ValueError(
                f"warmup_epochs only applies to 'warmup_cosine', not {self.name!r}; set it to 0"
            )
        return self


class LossConfig(BaseModel):
    """The segmentation loss, computed on float32 logits and integer labels."""

    model_config = _MODEL_CONFIG

    name: Literal["dice", "dice_ce", "focal", "cldice"] = "dice_ce"
    """``dice`` (soft Dice), ``dice_ce`` (Dice + cross-entropy), ``focal`` (focal loss) or
    ``cldice`` (Dice + cross-entropy blended with soft clDice, which rewards connected vessel
    centrelines)."""
    cldice_alpha: float | None = Field(default=None, ge=0.0, le=1.0)
    """Weight of soft clDice in ``(1 - alpha) * dice_ce + alpha * (1 - cldice)``; only for
    ``cldice`` (unset: 0.5)."""
    skeleton_iterations: int | None = Field(default=None, ge=1)
    """Iterations of the soft skeletonisation (about the largest vessel radius in voxels); only
    for ``cldice`` (unset: 3)."""

    @field_validator("cldice_alpha")
    @classmethod
    def _cldice_alpha(cls, value: float | None, info: ValidationInfo) -> object:
        return _only_for("cldice", 0.5, value, info)

    @field_validator("skeleton_iterations")
    @classmethod
    def _cldice_iterations(cls, value: int | None, info: ValidationInfo) -> object:
        return _only_for("cldice", 3, value, info)


class TrainingConfig(BaseModel):
    """The training loop (litgpt ``TrainArgs`` style: a docstring under every field)."""

    model_config = _MODEL_CONFIG

    seed: int = Field(default=0, ge=0)
    """Seed of every random generator (python, numpy, torch, data sampling)."""
    max_epochs: int = Field(default=100, ge=1)
    """Epochs to train; one epoch is one pass over the training sampler."""
    batch_size: int = Field(default=2, ge=1)
    """Volumes per micro-step; each contributes ``data.samples_per_volume`` patches."""
    grad_accumulation_steps: int = Field(default=1, ge=1)
    """Micro-steps whose gradients are summed before an optimiser step; an optimiser step sees
    ``batch_size * data.samples_per_volume * grad_accumulation_steps`` patches."""
    val_every_n_epochs: int = Field(default=1, ge=1)
    """Validate (sliding window over whole validation volumes) every this many epochs and after
    the last one."""
    precision: Precision = "auto"
    """Autocast precision: ``fp32``, ``bf16``, ``fp16`` (CUDA only) or ``auto`` (see
    :func:`minivess.adapters.resolve_precision`)."""
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    max_time_minutes: float | None = Field(default=None, gt=0.0)
    """Stop after the first epoch that ends past this wall-clock budget; ``None``: no limit."""
    early_stopping_patience: int | None = Field(default=None, ge=1)
    """Stop after this many validations without improvement; ``None``: never stop early."""
    deterministic: bool = False
    """Use deterministic algorithms (``torch.use_deterministic_algorithms``): reproducible to
    the bit on one machine, slower."""
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    """The optimiser."""
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    """The learning-rate schedule."""
    loss: LossConfig = Field(default_factory=LossConfig)
    """The loss."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.scheduler.warmup_epochs >= self.max_epochs:
            raise ValueError(
                f"scheduler.warmup_epochs ({self.scheduler.warmup_epochs}) must be smaller than "
                f"max_epochs ({self.max_epochs})"
            )
        if self.precision == "fp16" and self.device == "cpu":
            raise ValueError("precision 'fp16' needs a CUDA device; use bf16 or fp32 on cpu")
        return self
