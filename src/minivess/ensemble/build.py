"""Build an ensemble from saved models: checkpoints, model folders or MLflow model URIs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from minivess.adapters import CheckpointInfo, ModelAdapter
from minivess.ensemble.combine import Combine, EnsembleAdapter
from minivess.errors import ConfigError


def load_members(sources: Sequence[str | Path]) -> list[tuple[ModelAdapter, CheckpointInfo]]:
    """Load every member model (see :func:`minivess.inference.load_source`).

    Raises:
        ConfigError: Fewer than two sources.
        CheckpointError: A source is not a readable model.
    """
    from minivess.inference.sources import load_source

    if len(sources) < 2:
        raise ConfigError(f"an ensemble needs at least two models, got {len(sources)}")
    return [load_source(s) for s in sources]


def build_ensemble(
    sources: Sequence[str | Path],
    *,
    combine: Combine = "mean",
    weights: Sequence[float] | None = None,
    members: Sequence[tuple[ModelAdapter, CheckpointInfo]] | None = None,
) -> tuple[EnsembleAdapter, dict[str, Any]]:
    """An ensemble of trained models and the checkpoint ``extra`` it predicts with.

    The members must share their intensity preprocessing (the ensemble normalises a volume
    once); the sliding window is the first member's, grown to the smallest size every member
    accepts. The ensemble's data version is kept only when all members share it.

    Args:
        sources: Two or more checkpoints, model folders or MLflow model URIs.
        combine: ``mean``, ``weighted`` or ``vote``.
        weights: One weight per member for ``weighted``.
        members: The already loaded ``(adapter, info)`` of ``sources`` (skips loading).

    Returns:
        ``(ensemble, extra)``: save with ``ensemble.save_checkpoint(path, extra=extra,
        data_version=extra["data_version"])``.

    Raises:
        ConfigError: Fewer than two members, differing preprocessing or channels, or weights
            that do not fit ``combine``.
        CheckpointError: A source is not a readable model, or lacks prediction settings.
    """
    from minivess.inference.settings import PredictionSettings

    loaded = list(members) if members is not None else load_members(sources)
    settings = [PredictionSettings.from_checkpoint(info) for _, info in loaded]
    preprocessing = {s.preprocessing for s in settings}
    if len(preprocessing) != 1:
        raise ConfigError(
            "ensemble members normalise intensities differently "
            f"({sorted(p.percentiles for p in preprocessing)}); combine models trained with "
            "the same intensity_percentiles"
        )
    first = loaded[0][0]
    ensemble = EnsembleAdapter.from_config(
        {
            "in_channels": first.in_channels,
            "out_channels": first.out_channels,
            "members": [
                {"adapter": info.adapter, "config": info.config, "name": str(source)}
                for source, (_, info) in zip(sources, loaded, strict=True)
            ],
            "combine": combine,
            "weights": list(weights) if weights is not None else None,
        }
    )
    for target, (adapter, _) in zip(ensemble.members, loaded, strict=True):
        target.network.load_state_dict(adapter.network.state_dict())
    inference = settings[0].inference.model_dump(mode="json")
    inference["roi_size"] = list(ensemble.pad_to_valid(inference["roi_size"]))
    versions = {info.data_version for _, info in loaded}
    extra = {
        "preprocessing": settings[0].preprocessing.model_dump(),
        "inference": inference,
        "data_version": versions.pop() if len(versions) == 1 else None,
    }
    return ensemble, extra


def save_ensemble(ensemble: EnsembleAdapter, extra: dict[str, Any], path: str | Path) -> Path:
    """Write the ensemble as one self-describing checkpoint (loadable by ``load_checkpoint``)."""
    extra = dict(extra)
    data_version = extra.pop("data_version", None)
    return ensemble.save_checkpoint(path, data_version=data_version, extra=extra)
