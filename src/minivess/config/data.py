"""What the model is trained on: the prepared dataset, the fold, patch sampling and augmentation.

:func:`minivess.data.datasets.build_datasets` builds the training and validation datasets from
exactly these values. Sliding-window settings for validation and inference belong to the model
and inference configs, not here.

Distances in the augmentation settings (elastic displacement, blur) are in the volume's world
units, which are micrometres for minivess data; intensities are those after percentile
normalisation to [0, 1].

Example:
    >>> cfg = DataConfig(
    ...     dataset_dir="prepared/vesselnn",
    ...     splits_file="prepared/vesselnn/splits.json",
    ...     patch_size=(64, 64, 16),
    ...     augmentation={"noise": {"p": 0.5}},
    ... )
    >>> cfg.augmentation.noise.std
    (0.0, 0.05)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_MODEL_CONFIG = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegative = Annotated[float, Field(ge=0.0)]
_Spacing = Annotated[float, Field(gt=0.0)] | None
TargetSpacing = tuple[_Spacing, _Spacing, _Spacing]
"""Voxel size (H, W, D) in micrometres to resample to; a ``None`` entry keeps that axis."""
Axis = Literal[0, 1, 2]


def _ordered(value: tuple[float, float]) -> tuple[float, float]:
    """Check that a ``(low, high)`` range is not reversed."""
    low, high = value
    if low > high:
        raise ValueError(f"range must be (low, high) with low <= high, got ({low}, {high})")
    return value


def _distinct_axes(value: tuple[int, ...]) -> tuple[int, ...]:
    if len(value) == 0:
        raise ValueError("give at least one axis (0, 1 or 2)")
    if len(set(value)) != len(value):
        raise ValueError(f"axes must not repeat, got {value}")
    return value


class FlipConfig(BaseModel):
    """Random flips (``torchio.RandomFlip``) of image and label together."""

    model_config = _MODEL_CONFIG

    p: Probability = 0.5
    """Probability of flipping along each of ``axes``, drawn independently per axis."""
    axes: tuple[Axis, ...] = (0, 1, 2)
    """Spatial axes (H=0, W=1, D=2) that may be flipped."""

    _axes = field_validator("axes")(_distinct_axes)


class AffineConfig(BaseModel):
    """Random rotation and scaling (``torchio.RandomAffine``); labels use nearest neighbours."""

    model_config = _MODEL_CONFIG

    p: Probability = 0.2
    """Probability of applying a random affine transform to a patch."""
    degrees: tuple[NonNegative, NonNegative, NonNegative] = (0.0, 0.0, 15.0)
    """Largest rotation in degrees about each axis (H, W, D), drawn from (-d, d). The default
    rotates only in the imaging plane, which suits stacks with coarse depth sampling."""
    scales: tuple[Annotated[float, Field(gt=0.0)], Annotated[float, Field(gt=0.0)]] = (0.9, 1.1)
    """Range of the isotropic scaling factor."""

    _scales = field_validator("scales")(_ordered)


class ElasticConfig(BaseModel):
    """Random B-spline elastic deformation (``torchio.RandomElasticDeformation``).

    Off by default: it is by far the slowest augmentation on a CPU (about a second per
    96x96x16 patch with SimpleITK).
    """

    model_config = _MODEL_CONFIG

    p: Probability = 0.0
    """Probability of deforming a patch."""
    num_control_points: int = Field(default=7, ge=4)
    """Control points per axis of the coarse B-spline grid (at least 4)."""
    max_displacement: tuple[NonNegative, NonNegative, NonNegative] = (4.0, 4.0, 1.0)
    """Largest displacement of a control point along (H, W, D), in world units (micrometres).
    TorchIO warns when it exceeds half the control-grid spacing (the grid may fold)."""


class NoiseConfig(BaseModel):
    """Additive Gaussian noise on the image (``torchio.RandomNoise``)."""

    model_config = _MODEL_CONFIG

    p: Probability = 0.2
    """Probability of adding noise to a patch."""
    std: tuple[NonNegative, NonNegative] = (0.0, 0.05)
    """Range the noise standard deviation is drawn from, in normalised intensity units."""

    _std = field_validator("std")(_ordered)


class BiasFieldConfig(BaseModel):
    """Smooth multiplicative intensity inhomogeneity (``torchio.RandomBiasField``)."""

    model_config = _MODEL_CONFIG

    p: Probability = 0.1
    """Probability of applying a bias field to a patch."""
    coefficients: NonNegative = 0.3
    """Polynomial coefficients are drawn from (-c, c); larger means a stronger field."""
    order: int = Field(default=3, ge=0)
    """Order of the polynomial basis of the field."""


class GammaConfig(BaseModel):
    """Random gamma (contrast) change of the image (``torchio.RandomGamma``)."""

    model_config = _MODEL_CONFIG

    p: Probability = 0.3
    """Probability of changing the gamma of a patch."""
    log_gamma: tuple[float, float] = (-0.3, 0.3)
    """Range of log(gamma); (-0.3, 0.3) gives gamma between about 0.74 and 1.35."""

    _log_gamma = field_validator("log_gamma")(_ordered)


class AnisotropyConfig(BaseModel):
    """Simulated coarser sampling along one axis (``torchio.RandomAnisotropy``), image only."""

    model_config = _MODEL_CONFIG

    p: Probability = 0.1
    """Probability of downsampling and re-upsampling a patch."""
    axes: tuple[Axis, ...] = (0, 1)
    """Axes one of which is drawn to be downsampled."""
    downsampling: tuple[Annotated[float, Field(ge=1.0)], Annotated[float, Field(ge=1.0)]] = (
        1.5,
        3.0,
    )
    """Range of the downsampling factor (at least 1)."""

    _axes = field_validator("axes")(_distinct_axes)
    _downsampling = field_validator("downsampling")(_ordered)


class BlurConfig(BaseModel):
    """Gaussian blur of the image (``torchio.RandomBlur``)."""

    model_config = _MODEL_CONFIG

    p: Probability = 0.1
    """Probability of blurring a patch."""
    std: tuple[NonNegative, NonNegative] = (0.0, 1.0)
    """Range of the Gaussian standard deviation, in world units (micrometres)."""

    _std = field_validator("std")(_ordered)


class AugmentationConfig(BaseModel):
    """Random augmentation of training patches, applied after cropping.

    Spatial transforms (flip, affine, elastic) move image and label together; intensity
    transforms (anisotropy, bias field, gamma, blur, noise) change the image only. A transform
    with ``p == 0`` is not built at all.
    """

    model_config = _MODEL_CONFIG

    enabled: bool = True
    """Master switch; ``False`` trains on un-augmented patches whatever the settings below."""
    flip: FlipConfig = FlipConfig()
    """Random flips."""
    affine: AffineConfig = AffineConfig()
    """Random rotation and scaling."""
    elastic: ElasticConfig = ElasticConfig()
    """Random elastic deformation."""
    anisotropy: AnisotropyConfig = AnisotropyConfig()
    """Simulated anisotropic sampling."""
    bias_field: BiasFieldConfig = BiasFieldConfig()
    """Multiplicative bias field."""
    gamma: GammaConfig = GammaConfig()
    """Gamma (contrast) change."""
    blur: BlurConfig = BlurConfig()
    """Gaussian blur."""
    noise: NoiseConfig = NoiseConfig()
    """Additive Gaussian noise."""


class DataConfig(BaseModel):
    """The training data: where it is, which fold, how patches are sampled, cached, augmented."""

    model_config = _MODEL_CONFIG

    dataset_dir: Path
    """A prepared dataset: ``images/``, ``labels/``, ``manifest.csv`` and ``dataset.json``."""
    splits_file: Path
    """Cross-validation splits (JSON) made for this dataset's version."""
    fold: int = Field(default=0, ge=0)
    """Which fold of ``splits_file`` to train on and validate with."""
    patch_size: tuple[
        Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]
    ] = (96, 96, 16)
    """Training patch size (H, W, D) in voxels; smaller volumes are zero-padded up to it."""
    samples_per_volume: int = Field(default=2, ge=1)
    """Patches cropped from each volume each time it is drawn."""
    pos_neg_ratio: tuple[NonNegative, NonNegative] = (2.0, 1.0)
    """Relative odds (pos, neg) that a patch is centred on a vessel or a background voxel."""
    target_spacing_um: TargetSpacing | None = None
    """Voxel size (H, W, D) in micrometres that training volumes are resampled to before
    patches are drawn (image linear, label linear thresholded at 0.5); a ``null`` entry keeps
    that axis at each volume's own spacing. ``None`` trains at the prepared spacing. A model
    trained with it predicts any volume by resampling there and back, so its outputs stay on
    the input's grid (``minivess plan`` fills it; see :mod:`minivess.data.resample`)."""
    intensity_percentiles: tuple[
        Annotated[float, Field(ge=0.0, le=100.0)], Annotated[float, Field(ge=0.0, le=100.0)]
    ] = (1.0, 99.8)
    """Per-volume intensity percentiles (lower, upper) mapped to 0 and 1, clipping beyond."""
    cache: Literal["memory", "disk", "none"] = "memory"
    """Where the deterministic part of loading (decode, normalise, pad, foreground indices) is
    kept: ``memory`` (computed once up front), ``disk`` (``cache_dir``, reused across runs) or
    ``none`` (redone every time a volume is drawn)."""
    cache_dir: Path | None = None
    """Folder for ``cache="disk"``; required for it and unused otherwise."""
    num_workers: int = Field(default=0, ge=0)
    """Data-loader worker processes (0 loads in the training process); also the number of
    threads filling the memory cache."""
    augmentation: AugmentationConfig = AugmentationConfig()
    """Random augmentation of training patches."""

    @field_validator("pos_neg_ratio")
    @classmethod
    def _some_positive_odds(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[0] + value[1] <= 0:
            raise ValueError("at least one of (pos, neg) must be positive")
        return value

    @field_validator("intensity_percentiles")
    @classmethod
    def _lower_below_upper(cls, value: tuple[float, float]) -> tuple[float, float]:
        lower, upper = value
        if lower >= upper:
            raise ValueError(f"lower ({lower}) must be below upper ({upper})")
        return value

    @model_validator(mode="after")
    def _disk_cache_needs_dir(self) -> Self:
        if self.cache == "disk" and self.cache_dir is None:
            raise ValueError("cache_dir: required when cache='disk' (or choose cache='memory')")
        return self
