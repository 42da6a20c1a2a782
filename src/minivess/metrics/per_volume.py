"""Shared machinery of the minivess metrics: input checks and per-volume score states.

Every metric scores each volume of a batch separately and keeps one float per volume in a
list state reduced with ``"cat"``, so that under DDP the per-volume values of all ranks are
gathered (rank 0's volumes first, then rank 1's, ...) and the evaluator can build per-volume
tables and bootstrap intervals from them.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, TypeAlias

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

#: Voxel size in micrometres along (H, W, D): one triple for the whole batch, one triple per
#: volume (shape (B, 3)), or ``None`` for 1 um isotropic.
SpacingLike: TypeAlias = Sequence[float] | Sequence[Sequence[float]] | Tensor | np.ndarray | None

Spacing: TypeAlias = tuple[float, float, float]


def binary_volumes(preds: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Check a batch of predicted and reference masks and return them as (B, H, W, D) bool.

    Args:
        preds: Predicted masks, shape (B, H, W, D) or (B, 1, H, W, D), any dtype holding only
            0 and 1 (bool, integer, or float after thresholding).
        target: Reference masks of the same shape.

    Returns:
        ``(preds, target)`` as boolean tensors of shape (B, H, W, D) on their input device.

    Raises:
        TypeError: An input is not a tensor.
        ValueError: The shapes differ or are not 4D / 5D with one channel, or a mask holds a
            value other than 0 and 1 (e.g. probabilities that were not thresholded).
    """
    for name, mask in (("preds", preds), ("target", target)):
        if not isinstance(mask, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if preds.shape != target.shape:
        raise ValueError(
            f"preds and target must have the same shape, got {tuple(preds.shape)} "
            f"and {tuple(target.shape)}"
        )
    return _as_bool(preds, "preds"), _as_bool(target, "target")


def _as_bool(mask: Tensor, name: str) -> Tensor:
    if mask.ndim == 5 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.ndim != 4:
        raise ValueError(
            f"{name} must have shape (B, H, W, D) or (B, 1, H, W, D), got {tuple(mask.shape)}"
        )
    if mask.dtype == torch.bool:
        return mask
    if bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError(
            f"{name} must be a binary mask holding only 0 and 1 (got dtype {mask.dtype} with "
            "other values): threshold probabilities (probs > 0.5) or take the argmax of logits"
        )
    return mask != 0


def spacing_per_volume(spacing: SpacingLike, n_volumes: int) -> list[Spacing]:
    """One (H, W, D) voxel size in micrometres for each of ``n_volumes`` volumes.

    Args:
        spacing: ``None`` (1 um isotropic), three positive numbers shared by the batch, or an
            array-like of shape (n_volumes, 3).
        n_volumes: Batch size.

    Returns:
        A list of ``n_volumes`` (H, W, D) tuples.

    Raises:
        ValueError: The shape is wrong or a size is not a finite positive number.
    """
    if spacing is None:
        return [(1.0, 1.0, 1.0)] * n_volumes
    if isinstance(spacing, Tensor):
        spacing = spacing.detach().cpu().numpy()
    try:
        sizes = np.asarray(spacing, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"spacing must be numbers in micrometres, got {spacing!r}") from exc
    if sizes.shape == (3,):
        sizes = np.broadcast_to(sizes, (n_volumes, 3))
    if sizes.shape != (n_volumes, 3):
        raise ValueError(
            "spacing must be three voxel sizes in um along (H, W, D), or one such triple per "
            f"volume (shape ({n_volumes}, 3)), got shape {sizes.shape}"
        )
    if not np.all(np.isfinite(sizes) & (sizes > 0)):
        raise ValueError(f"voxel sizes must be finite positive micrometres, got {sizes.tolist()}")
    return [(float(h), float(w), float(d)) for h, w, d in sizes]


def as_numpy(masks: Tensor) -> np.ndarray:
    """A (B, H, W, D) bool tensor as a NumPy array on the CPU, for SciPy / scikit-image code."""
    return masks.detach().cpu().numpy()


class PerVolumeMetric(Metric):
    """Base of the minivess metrics: one score per volume for each name in ``score_names``.

    Subclasses implement :meth:`_score_batch`. States are lists of float32 tensors reduced by
    concatenation, so :meth:`merge_state`, ``forward`` and DDP synchronisation keep every
    per-volume value (``a.merge_state(b)`` puts ``b``'s volumes before ``a``'s).
    """

    is_differentiable = False
    full_state_update = False
    score_names: ClassVar[tuple[str, ...]]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in self.score_names:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor, spacing: SpacingLike = None) -> None:
        """Score each volume of a batch and keep the scores.

        Args:
            preds: Binary predictions, (B, H, W, D) or (B, 1, H, W, D); see
                :func:`binary_volumes`.
            target: Binary reference masks of the same shape.
            spacing: Voxel size in micrometres along (H, W, D), shared or per volume (see
                :func:`spacing_per_volume`); only surface metrics use it. Default 1 um.
        """
        pred_masks, target_masks = binary_volumes(preds, target)
        spacings = spacing_per_volume(spacing, pred_masks.shape[0])
        scores = self._score_batch(pred_masks, target_masks, spacings)
        for name in self.score_names:
            values = scores[name].to(device=self.device, dtype=torch.float32).reshape(-1)
            getattr(self, name).append(values)

    @abstractmethod
    def _score_batch(
        self, preds: Tensor, target: Tensor, spacings: list[Spacing]
    ) -> dict[str, Tensor]:
        """Scores of each volume, as a (B,) tensor for every name in ``score_names``."""

    def _values(self, name: str) -> Tensor:
        """All per-volume values of one state, in update order (no synchronisation)."""
        state = getattr(self, name)
        if isinstance(state, list) and not state:
            return torch.empty(0, device=self.device, dtype=torch.float32)
        return dim_zero_cat(state)

    def _synced_values(self) -> dict[str, Tensor]:
        """Per-volume values of every state, gathered from all ranks like ``compute`` does."""
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn,
            should_sync=self._to_sync,
            should_unsync=self._should_unsync,
        ):
            return {name: self._values(name).clone() for name in self.score_names}


class SingleScoreMetric(PerVolumeMetric):
    """A metric with one score per volume: ``compute`` is the mean over volumes, NaNs skipped."""

    def compute(self) -> Tensor:
        """Mean of the per-volume scores, ignoring NaN (undefined) volumes.

        Returns:
            A scalar tensor; NaN if no volume has a defined score.
        """
        return torch.nanmean(self._values(self.score_names[0]))

    def per_volume(self) -> Tensor:
        """Every per-volume score in update order (ranks concatenated in rank order under DDP)."""
        return self._synced_values()[self.score_names[0]]

    def nan_count(self) -> int:
        """How many volumes have an undefined (NaN) score, left out of :meth:`compute`."""
        return int(self.per_volume().isnan().sum())
