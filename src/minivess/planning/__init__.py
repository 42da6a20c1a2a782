"""Experiment defaults planned from a dataset fingerprint and a memory budget.

:func:`fingerprint_dataset` measures a prepared dataset (shapes, spacings, intensities, vessel
fraction and radii); :func:`derive_plan` turns it, an adapter and a budget into a
:class:`Plan` whose settings become config overrides (``minivess train --plan plan.yaml``).
See ``docs/training.md``.
"""

from minivess.planning.fingerprint import DatasetFingerprint, VolumeFingerprint, fingerprint_dataset
from minivess.planning.memory import MemoryModel
from minivess.planning.plan import Plan, PlanSetting, Resampling, derive_plan

__all__ = [
    "DatasetFingerprint",
    "MemoryModel",
    "Plan",
    "PlanSetting",
    "Resampling",
    "VolumeFingerprint",
    "derive_plan",
    "fingerprint_dataset",
]
