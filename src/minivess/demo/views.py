"""What the demo draws: a depth slice or a maximum projection with a map blended over it.

Everything here is plain numpy on ``(H, W, D)`` volumes and returns ``uint8`` RGB images with
rows = y (the transpose of a (x, y) plane), as the evaluation figures show them
(:mod:`minivess.evaluation.figures`). A map is either the predicted mask (one colour) or a
voxel-wise value in [0, 1] (P(vessel), its entropy, conformal uncertainty, ensemble
disagreement) drawn with a colour map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from minivess.errors import DataError
from minivess.inference import Prediction
from minivess.uncertainty.conformal import UNCERTAIN
from minivess.uncertainty.metrics import binary_entropy

MASK_COLOUR = (255, 0, 200)
"""Predicted vessel (magenta: stands out on grey and differs from the TP/FP/FN colours)."""
MASK_ALPHA = 0.55
HEAT_ALPHA = 0.75
"""Blend weight of a value of 1 on a value map; lower values blend proportionally less."""
HEAT_COLOURMAP = "inferno"
MASK_OVERLAY = "mask"
"""The overlay every prediction has; the others are value maps from :data:`VALUE_MAPS`."""
DISPLAY_MIN_SIDE = 512
"""Small planes are enlarged (by whole pixels) until their longer side reaches about this."""
_DISPLAY_PERCENTILES = (1.0, 99.5)
_DISPLAY_SAMPLE = 2_000_000


def conformal_uncertain(prediction: Prediction) -> np.ndarray:
    """1 where the conformal prediction set is {vessel, background} (the model cannot tell).

    Raises:
        DataError: The model stores no conformal calibration (rule ``no-conformal``).
    """
    if prediction.prediction_set is None:
        raise DataError(
            None,
            "no-conformal",
            "this model has no conformal calibration, so it has no uncertain voxels to show; "
            "calibrate it with `minivess conformal` and load the calibrated model",
        )
    return (np.asarray(prediction.prediction_set.array) == UNCERTAIN).astype(np.float32)


def ensemble_disagreement(prediction: Prediction) -> np.ndarray:
    """Mutual information between an ensemble's members in bits, in [0, 1].

    0 where the members agree (however unsure each is), 1 where two members vote oppositely
    with full confidence: the part of the uncertainty that more data or models could remove.

    Raises:
        DataError: The model is a single network (rule ``no-ensemble``).
    """
    if prediction.mutual_information is None:
        raise DataError(
            None,
            "no-ensemble",
            "this model is a single network, so it has no members to disagree; build an "
            "ensemble with `minivess ensemble build` and load it (torch backend)",
        )
    bits = np.asarray(prediction.mutual_information.array, dtype=np.float32) / np.log(2.0)
    return np.clip(bits, 0.0, 1.0).astype(np.float32)


VALUE_MAPS: dict[str, Callable[[Prediction], np.ndarray]] = {
    "P(vessel)": lambda prediction: np.asarray(prediction.probability.array, dtype=np.float32),
    "entropy": lambda prediction: binary_entropy(prediction.probability.array),
    "uncertain (conformal)": conformal_uncertain,
    "ensemble disagreement (MI)": ensemble_disagreement,
}
"""Voxel-wise maps in [0, 1] derived from a prediction, shown as heat overlays by name.

This is where uncertainty views plug in: a map computed from a :class:`Prediction` is one
more entry.
"""


@dataclass(frozen=True)
class DisplayRange:
    """Intensities mapped to black and white, fixed per volume so slices compare honestly.

    Args:
        low: Intensity shown black.
        high: Intensity shown white.
    """

    low: float
    high: float

    @classmethod
    def of(cls, image: np.ndarray) -> DisplayRange:
        """The 1st-99.5th percentile range of a volume (sampled on large volumes)."""
        flat = np.asarray(image).reshape(-1)
        if flat.size > _DISPLAY_SAMPLE:
            flat = flat[:: flat.size // _DISPLAY_SAMPLE + 1]
        low, high = np.percentile(flat.astype(np.float64), _DISPLAY_PERCENTILES)
        return cls(float(low), float(high))

    def grey(self, plane: np.ndarray) -> np.ndarray:
        """A 2D plane as float RGB in [0, 255], shape ``(*plane.shape, 3)``."""
        scaled = (plane.astype(np.float64) - self.low) / max(self.high - self.low, 1e-12)
        grey = np.clip(scaled, 0.0, 1.0) * 255.0
        return np.repeat(grey[..., None], 3, axis=-1)


def mask_overlay(plane: np.ndarray, mask: np.ndarray, display: DisplayRange) -> np.ndarray:
    """A grey plane with mask voxels tinted :data:`MASK_COLOUR`, rows = y.

    Args:
        plane: 2D intensities ``(x, y)``.
        mask: 2D mask of the same shape, non-zero = vessel.
        display: Intensity range shown from black to white.

    Returns:
        ``uint8`` image ``(y, x, 3)``.
    """
    rgb = display.grey(plane)
    vessel = np.asarray(mask) != 0
    rgb[vessel] = (1 - MASK_ALPHA) * rgb[vessel] + MASK_ALPHA * np.asarray(MASK_COLOUR)
    return _to_image(rgb)


def heat_overlay(plane: np.ndarray, values: np.ndarray, display: DisplayRange) -> np.ndarray:
    """A grey plane with values in [0, 1] blended in with :data:`HEAT_COLOURMAP`, rows = y.

    A voxel's blend weight grows with its value, so confident background stays plain grey.

    Args:
        plane: 2D intensities ``(x, y)``.
        values: 2D map of the same shape, in [0, 1].
        display: Intensity range shown from black to white.

    Returns:
        ``uint8`` image ``(y, x, 3)``.
    """
    from matplotlib import colormaps

    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0)
    colour = colormaps[HEAT_COLOURMAP](v)[..., :3] * 255.0
    weight = (HEAT_ALPHA * v)[..., None]
    return _to_image((1 - weight) * display.grey(plane) + weight * colour)


def slice_view(
    image: np.ndarray, overlay: np.ndarray, depth: int, display: DisplayRange, *, mask: bool
) -> np.ndarray:
    """Depth slice ``depth`` of ``image`` with ``overlay`` (a mask, or values in [0, 1]), enlarged.

    Raises:
        IndexError: ``depth`` is outside the volume.
    """
    if not 0 <= depth < image.shape[2]:
        raise IndexError(f"slice {depth} is outside 0..{image.shape[2] - 1}")
    draw = mask_overlay if mask else heat_overlay
    return enlarge(draw(image[:, :, depth], overlay[:, :, depth], display))


def projection_view(
    image: np.ndarray, overlay: np.ndarray, display: DisplayRange, *, mask: bool
) -> np.ndarray:
    """Maximum-intensity projection along depth with the overlay's projection, enlarged.

    A pixel of a mask projection is set if any voxel along depth is; a value map shows its
    largest value along depth.
    """
    draw = mask_overlay if mask else heat_overlay
    return enlarge(draw(image.max(axis=2), overlay.max(axis=2), display))


def enlarge(image: np.ndarray, min_side: int = DISPLAY_MIN_SIDE) -> np.ndarray:
    """Repeat each pixel of a small image until its longer side is about ``min_side``.

    A browser blurs a small image it stretches; whole repeated pixels keep voxels sharp.
    """
    factor = max(1, min_side // max(image.shape[:2]))
    if factor == 1:
        return image
    return np.ascontiguousarray(image.repeat(factor, axis=0).repeat(factor, axis=1))


def _to_image(rgb: np.ndarray) -> np.ndarray:
    """Float ``(x, y, 3)`` in [0, 255] as ``uint8`` ``(y, x, 3)``."""
    return np.ascontiguousarray(np.round(rgb).astype(np.uint8).transpose(1, 0, 2))
