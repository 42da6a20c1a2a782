"""Experiment defaults derived from a dataset fingerprint, a model and a memory budget.

The rules (each plan file repeats the one that decided each value, with the numbers):

- **Patch size**: start from the median volume shape, grown to the adapter's size rule; while
  a step on two patches exceeds the budget, shrink the axis with the largest physical extent
  (voxels x spacing) by one size-rule step (nnU-Net's rule), so patches tend to cover similar
  micrometres along every axis.
- **Patches per step**: as many as the budget holds, at least 2 (batch statistics), at most
  5% of the dataset's voxels per step (nnU-Net's cap), split into volumes x patches per volume.
- **Resampling** (``data.target_spacing_um``, which training honours): never along depth when
  its spacing is more than 3x the in-plane spacing (nnU-Net's anisotropy threshold; that entry
  is ``null``, each volume keeps its own); in-plane to the median spacing only when spacing
  varies more than 2x between volumes *and* vessel radii are more alike in micrometres than in
  voxels (then a common spacing makes vessels look alike to the network; otherwise it makes
  them less alike). Patch size and the 5% cap are then planned on the resampled shapes.
- **Sliding window**: windows of the training patch size (larger windows pad thin stacks with
  zeros the network never saw); overlap 0.5 on a GPU (nnU-Net), 0.25 on a CPU (half the
  windows).
- **Foreground oversampling**: vessel-centred to background-centred patches 2:1 when some
  volume has under 10% vessel voxels (random patches there would be mostly background),
  otherwise 1:1.

Example:
    >>> plan = derive_plan(fingerprint_dataset("data/prepared/vesselnn"),
    ...                    ModelConfig(name="segresnet"), device="cpu")  # doctest: +SKIP
    >>> plan.save("plan.yaml")  # doctest: +SKIP
    >>> plan.overrides(["training.max_epochs=3"])[:2]  # doctest: +SKIP
    ['model=segresnet', "data.dataset_dir='/.../vesselnn'"]
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

import minivess
from minivess.adapters import SizeRule
from minivess.config.model import ModelConfig
from minivess.config.validation import describe_validation_error
from minivess.errors import ConfigError
from minivess.planning.fingerprint import DatasetFingerprint
from minivess.planning.memory import MemoryModel

PLAN_VERSION = 1
CPU_BUDGET_GB = 1.0
"""Default step-memory budget on a CPU. A CPU step is bound by compute, not memory: at 1 GB a
SegResNet(16) step is two 96x96x16 patches, about a second on 2 Zen 4 cores (the measured
``quick`` profile). Raise it on a CPU with more cores."""
GPU_BUDGET_FRACTION = 0.8
"""Default GPU budget: this fraction of the device's memory (the rest: allocator and CUDA)."""
MIN_PATCHES = 2
MAX_DATASET_FRACTION = 0.05
DEPTH_ANISOTROPY = 3.0
SPACING_SPREAD = 2.0
SPARSE_VESSEL_FRACTION = 0.10
_UNSAFE = ("'", "\\", "${")

Device = Literal["cpu", "cuda"]


class PlanSetting(BaseModel):
    """One planned config value and the rule that chose it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: Any
    """The value, as it goes into the experiment config."""
    reason: str
    """Why: the rule and the fingerprint numbers that decided it."""


class Resampling(BaseModel):
    """Whether training should resample volumes to a common voxel size, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resample: bool
    """Resample to ``target_spacing_um`` (the plan's ``data.target_spacing_um``)."""
    target_spacing_um: list[float | None] | None = None
    """Voxel size (H, W, D) to resample to, when ``resample``; ``None`` keeps an axis."""
    reason: str
    """The rule and numbers that decided."""


class Plan(BaseModel):
    """A plan file: config values for one dataset, model and device, each with its reason.

    ``settings`` maps dotted config keys (``data.patch_size``) to values; :meth:`overrides`
    turns them into Hydra overrides that the user's own overrides beat.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    plan_version: int = PLAN_VERSION
    """Format version of the plan file."""
    created_by: str = Field(default_factory=lambda: f"minivess {minivess.__version__}")
    """The minivess version that wrote the plan."""
    dataset_version: str
    """Content version of the fingerprinted dataset."""
    model: str
    """Adapter the plan is for (its size rule and memory shaped the patch)."""
    model_overrides: list[str] = Field(default_factory=list)
    """Overrides of the adapter's parameters the plan was made with (``model.params.x=1``)."""
    device: Device
    """Device kind the budget is for."""
    memory_budget_gb: float
    """Step-memory budget in GB (1e9 bytes)."""
    estimated_step_gb: float
    """Estimated memory of one step with the planned patches."""
    settings: dict[str, PlanSetting]
    """Dotted config key -> planned value and reason."""
    resampling: Resampling
    """Resampling decision, also planned as ``data.target_spacing_um``."""
    fingerprint: dict[str, Any]
    """The dataset fingerprint the plan was derived from."""

    def save(self, path: str | Path) -> Path:
        """Write the plan as YAML (atomically); returns ``path``."""
        from minivess.data.io import atomic_path

        text = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, width=100)
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """Read a plan file.

        Raises:
            ConfigError: The file is missing, not YAML, or not a plan.
        """
        file = Path(path)
        try:
            raw = yaml.safe_load(file.read_text(encoding="utf-8"))
            return cls.model_validate(raw)
        except OSError as exc:
            raise ConfigError(f"--plan {file}: cannot read it ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--plan {file}: not YAML ({exc})") from None
        except ValidationError as exc:
            raise ConfigError(f"--plan {file}: {describe_validation_error(exc)}") from None

    def overrides(self, user_overrides: Sequence[str] = ()) -> list[str]:
        """Hydra overrides of the plan, minus the keys ``user_overrides`` set themselves.

        Put them before the user's overrides: ``[*plan.overrides(user), *user]``.

        Args:
            user_overrides: The user's own overrides.

        Returns:
            ``model=<name>`` and one ``key=value`` per planned setting not set by the user.

        Raises:
            ConfigError: The user chose another model than the plan was made for.
        """
        keys = {_override_key(o) for o in user_overrides}
        chosen = [o.split("=", 1)[1] for o in user_overrides if _override_key(o) == "model"]
        if any(value != self.model for value in chosen):
            raise ConfigError(
                f"the plan was made for model={self.model}, not {chosen[0]}: its patch size and "
                f"batch follow that model; run `minivess plan --model {chosen[0]}` for it"
            )
        planned = [f"{key}={_hydra_value(s.value)}" for key, s in self.settings.items()]
        planned = [*self.model_overrides, *planned]
        return [f"model={self.model}"] + [o for o in planned if _override_key(o) not in keys]


def derive_plan(
    fingerprint: DatasetFingerprint,
    model: ModelConfig,
    *,
    device: Device = "cpu",
    memory_gb: float | None = None,
    splits_file: str | Path | None = None,
    memory: MemoryModel | None = None,
    model_overrides: Sequence[str] = (),
) -> Plan:
    """The plan for training ``model`` on the fingerprinted dataset within a memory budget.

    Args:
        fingerprint: The dataset's fingerprint.
        model: Adapter and parameters (the plan respects its size rule).
        device: ``cpu`` or ``cuda``; sets the default budget, overlap and window batch.
        memory_gb: Step-memory budget in GB; default :data:`CPU_BUDGET_GB` on a CPU, or
            :data:`GPU_BUDGET_FRACTION` of the first GPU's memory.
        splits_file: Cross-validation splits; default ``<dataset>/splits.json``.
        memory: The adapter's memory model (measured with :meth:`MemoryModel.probe` if
            ``None``).
        model_overrides: The overrides that gave ``model`` its parameters, replayed by
            :meth:`Plan.overrides` so training builds the network that was planned for.

    Returns:
        The plan.

    Raises:
        ConfigError: The budget cannot hold two patches of the smallest valid size.
    """
    budget = (memory_gb if memory_gb is not None else default_budget_gb(device)) * 1e9
    memory = memory or MemoryModel.probe(model)
    rule = model.size_rule()
    resampling = resampling_decision(fingerprint)
    shapes, spacings = _training_grids(fingerprint, resampling.target_spacing_um)
    median_shape = tuple(int(s) for s in np.median(shapes, axis=0))
    spacing = tuple(float(s) for s in np.median(spacings, axis=0))
    patch, patch_reason = plan_patch(median_shape, spacing, rule, memory, budget)
    total_voxels = int(np.prod(shapes, axis=1).sum())
    n_patches, n_reason = plan_patches_per_step(patch, memory, budget, total_voxels)
    per_volume = 2 if n_patches % 2 == 0 else 1
    dataset = fingerprint.dataset_dir
    splits = Path(splits_file) if splits_file is not None else dataset / "splits.json"
    settings = {
        "data.dataset_dir": PlanSetting(value=str(dataset), reason="the fingerprinted dataset"),
        "data.splits_file": PlanSetting(value=str(splits), reason="its cross-validation splits"),
        "data.target_spacing_um": PlanSetting(
            value=resampling.target_spacing_um, reason=resampling.reason
        ),
        "data.patch_size": PlanSetting(value=list(patch), reason=patch_reason),
        "data.samples_per_volume": PlanSetting(value=per_volume, reason=n_reason),
        "training.batch_size": PlanSetting(value=n_patches // per_volume, reason=n_reason),
        "data.pos_neg_ratio": _pos_neg(fingerprint),
        "inference.roi_size": PlanSetting(
            value=list(patch),
            reason="windows of the training patch size: larger ones pad thin stacks with "
            "zeros the network never saw",
        ),
        **_window(device, n_patches),
        "training.device": PlanSetting(value=device, reason="the device the budget is for"),
    }
    return Plan(
        dataset_version=fingerprint.version,
        model=model.name,
        model_overrides=[o for o in model_overrides if _override_key(o) != "model"],
        device=device,
        memory_budget_gb=round(budget / 1e9, 3),
        estimated_step_gb=round(memory.step_bytes(patch, n_patches) / 1e9, 3),
        settings=settings,
        resampling=resampling,
        fingerprint=fingerprint.to_dict(),
    )


def default_budget_gb(device: Device) -> float:
    """:data:`CPU_BUDGET_GB` on a CPU; :data:`GPU_BUDGET_FRACTION` of GPU 0's memory on CUDA.

    Raises:
        ConfigError: ``cuda`` without a visible CUDA device.
    """
    if device == "cpu":
        return CPU_BUDGET_GB
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible; plan with --device cpu")
    return GPU_BUDGET_FRACTION * torch.cuda.get_device_properties(0).total_memory / 1e9


def plan_patch(
    median_shape: Sequence[int],
    spacing: Sequence[float],
    rule: SizeRule,
    memory: MemoryModel,
    budget_bytes: float,
) -> tuple[tuple[int, int, int], str]:
    """The largest patch (up to the median shape) of which two fit the budget, and why.

    Raises:
        ConfigError: Not even two patches of the smallest valid size fit.
    """
    patch = list(rule.pad_to_valid(median_shape))
    while memory.step_bytes(patch, MIN_PATCHES) > budget_bytes:
        shrinkable = [i for i in range(3) if patch[i] - rule.divisor[i] >= rule.minimum[i]]
        if not shrinkable:
            need = memory.step_bytes(patch, MIN_PATCHES) / 1e9
            raise ConfigError(
                f"a memory budget of {budget_bytes / 1e9:.2f} GB cannot hold {MIN_PATCHES} "
                f"patches of the smallest valid size {tuple(patch)} ({need:.2f} GB); "
                "raise --memory-gb or choose a smaller model"
            )
        axis = max(shrinkable, key=lambda i: patch[i] * spacing[i])
        patch[axis] -= rule.divisor[axis]
    shape = (patch[0], patch[1], patch[2])
    extent = " x ".join(f"{p * s:.0f}" for p, s in zip(shape, spacing, strict=True))
    reason = (
        f"largest patch up to the median shape {tuple(median_shape)} (grown to the size rule: "
        f"multiples of {rule.divisor}) of which {MIN_PATCHES} fit {budget_bytes / 1e9:.2f} GB, "
        f"shrinking the axis with the largest extent first; covers {extent} um"
    )
    return shape, reason


def plan_patches_per_step(
    patch: Sequence[int], memory: MemoryModel, budget_bytes: float, dataset_voxels: int
) -> tuple[int, str]:
    """Patches per optimiser step: as many as fit, at least 2, at most 5% of the dataset."""
    fit = int((budget_bytes - memory.fixed_bytes()) // memory.patch_bytes(patch))
    cap = max(MIN_PATCHES, int(MAX_DATASET_FRACTION * dataset_voxels // math.prod(patch)))
    n = min(max(MIN_PATCHES, fit), cap)
    reason = (
        f"{n} patches per step (training.batch_size volumes x data.samples_per_volume): "
        f"{fit} fit the budget at {memory.patch_bytes(patch) / 1e9:.2f} GB each, at least "
        f"{MIN_PATCHES}, at most {cap} ({MAX_DATASET_FRACTION:.0%} of the dataset's voxels)"
    )
    return n, reason


def resampling_decision(fingerprint: DatasetFingerprint) -> Resampling:
    """Whether to resample in-plane to a common spacing (see the module doc for the rule)."""
    in_plane = np.array([(v.spacing[0] + v.spacing[1]) / 2 for v in fingerprint.volumes])
    depth = np.array([v.spacing[2] for v in fingerprint.volumes])
    anisotropy = float(np.median(depth / in_plane))
    depth_note = (
        f"depth is never resampled: its spacing is {anisotropy:.1f}x the in-plane spacing "
        f"(median), above nnU-Net's anisotropy threshold of {DEPTH_ANISOTROPY:g}"
        if anisotropy > DEPTH_ANISOTROPY
        else f"depth spacing is {anisotropy:.1f}x the in-plane spacing"
    )
    spread = float(in_plane.max() / in_plane.min())
    if spread <= SPACING_SPREAD:
        return Resampling(
            resample=False,
            reason=f"in-plane spacing varies {spread:.2f}x between volumes (at most "
            f"{SPACING_SPREAD:g}x): interpolation would cost more than it aligns; {depth_note}",
        )
    radius_um = np.array([v.radius_um["p50"] for v in fingerprint.volumes])
    radius_vox = np.array([v.radius_voxels["p50"] for v in fingerprint.volumes])
    known = ~np.isnan(radius_um)
    spread_um = float(np.std(np.log(radius_um[known])))
    spread_vox = float(np.std(np.log(radius_vox[known])))
    numbers = (
        f"in-plane spacing varies {spread:.2f}x between volumes; the per-volume median vessel "
        f"radius has a log-spread of {spread_um:.2f} in um and {spread_vox:.2f} in voxels"
    )
    if spread_um < spread_vox:
        target = float(np.median(in_plane))
        depth_target = None if anisotropy > DEPTH_ANISOTROPY else float(np.median(depth))
        return Resampling(
            resample=True,
            target_spacing_um=[target, target, depth_target],
            reason=f"{numbers}: vessels are more alike at a common spacing, so training "
            f"resamples in-plane to the median {target:.3f} um and prediction maps back to "
            f"each input's grid; {depth_note}",
        )
    return Resampling(
        resample=False,
        reason=f"{numbers}: vessels are more alike in voxels than in um, so a common spacing "
        f"would make them less alike to the network; {depth_note}",
    )


def _training_grids(
    fingerprint: DatasetFingerprint, target: Sequence[float | None] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Shapes and voxel sizes (n_volumes x 3) of the volumes as training sees them."""
    from minivess.data.resample import resampled_shape

    shapes = np.array([v.shape for v in fingerprint.volumes])
    spacings = np.array([v.spacing for v in fingerprint.volumes], dtype=np.float64)
    if target is None:
        return shapes, spacings
    shapes = np.array([resampled_shape(v.shape, v.spacing, target) for v in fingerprint.volumes])
    spacings = np.array(
        [
            [s if t is None else t for s, t in zip(v.spacing, target, strict=True)]
            for v in fingerprint.volumes
        ],
        dtype=np.float64,
    )
    return shapes, spacings


def _pos_neg(fingerprint: DatasetFingerprint) -> PlanSetting:
    sparsest = min(fingerprint.volumes, key=lambda v: v.vessel_fraction)
    sparse = sparsest.vessel_fraction < SPARSE_VESSEL_FRACTION
    verdict = "a volume has under" if sparse else "no volume has under"
    return PlanSetting(
        value=[2.0, 1.0] if sparse else [1.0, 1.0],
        reason=f"{verdict} {SPARSE_VESSEL_FRACTION:.0%} vessel voxels (sparsest: {sparsest.id}, "
        f"{sparsest.vessel_fraction:.1%}): "
        + ("oversample vessel-centred patches 2:1" if sparse else "sample 1:1"),
    )


def _window(device: Device, n_patches: int) -> dict[str, PlanSetting]:
    if device == "cuda":
        return {
            "inference.overlap": PlanSetting(value=0.5, reason="nnU-Net's overlap on a GPU"),
            "inference.sw_batch_size": PlanSetting(
                value=n_patches, reason="as many windows per pass as training patches per step"
            ),
        }
    return {
        "inference.overlap": PlanSetting(
            value=0.25, reason="on a CPU: about half the windows of overlap 0.5"
        ),
        "inference.sw_batch_size": PlanSetting(value=1, reason="one window per pass on a CPU"),
    }


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _hydra_value(value: Any) -> str:
    """``value`` in Hydra's override grammar (strings quoted, lists in brackets)."""
    if isinstance(value, str):
        if any(bad in value for bad in _UNSAFE):
            raise ConfigError(
                f"plan value {value!r}: quotes, backslashes and '${{' are not supported"
            )
        return f"'{value}'"
    return json.dumps(value).replace(" ", "")
