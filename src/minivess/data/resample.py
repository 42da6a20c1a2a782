"""Resampling to a target voxel size, for training, and predicting there on the input's own grid.

A model trained with ``data.target_spacing_um`` sees every training volume resampled to that
voxel size (:class:`ResampleToSpacingd`). At prediction, :func:`predict_at_spacing` resamples
the normalised input to it, runs the network there, and resamples the class probabilities back
to exactly the input's shape, so masks, probabilities and metrics stay on the user's grid.

Grid convention: along an axis, ``n`` voxels of size ``s`` cover ``n * s`` micrometres; at a
target size ``t`` the same extent holds ``round(n * s / t)`` voxels (at least 1), whose size is
``n * s / round(n * s / t)``, close to ``t``. Samples sit where ``torch.nn.functional.
interpolate(..., align_corners=False)`` puts them: the outer edges of both grids coincide. An
axis whose target is ``None`` keeps each volume's own spacing, and an axis whose voxel count
does not change is not interpolated at all, so a target equal to a volume's own spacing leaves
it bit for bit as it was.

Images use linear interpolation; labels are interpolated linearly and thresholded at 0.5
(nearest-neighbour shifts thin vessels by up to half a voxel).

Example:
    >>> resampled_shape((512, 512, 15), (0.621, 0.621, 5.0), (0.994, 0.994, None))
    (320, 320, 15)
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import MapTransform

from minivess.data.volume import spacing_from_affine

TargetSpacing = Sequence[float | None]
"""Voxel size (H, W, D) in micrometres to resample to; ``None`` keeps an axis as it is."""
Shape = tuple[int, int, int]


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: TargetSpacing) -> Shape:
    """Voxels along (H, W, D) of a volume of ``shape`` and ``spacing`` resampled to ``target``.

    Args:
        shape: Spatial shape (H, W, D).
        spacing: Voxel size (H, W, D) in micrometres.
        target: Target voxel size; a ``None`` entry keeps that axis's voxel count.

    Returns:
        The resampled shape (at least one voxel per axis).
    """
    out = [
        int(n) if t is None else max(1, round(int(n) * float(s) / float(t)))
        for n, s, t in zip(shape, spacing, target, strict=True)
    ]
    return out[0], out[1], out[2]


def resample(array: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Linear interpolation of a channel-first ``(C, H, W, D)`` tensor onto ``shape``.

    Args:
        array: Values to resample (any real dtype; computed in float32).
        shape: Target spatial shape.

    Returns:
        A plain float32 tensor ``(C, *shape)``; ``array`` itself (untouched) when its spatial
        shape already is ``shape``.
    """
    if tuple(array.shape[1:]) == tuple(shape):
        return array
    values = array.as_tensor() if isinstance(array, MetaTensor) else torch.as_tensor(array)
    values = values.to(torch.float32)[None]
    return F.interpolate(values, size=tuple(shape), mode="trilinear", align_corners=False)[0]


def resample_label(label: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """A binary ``(C, H, W, D)`` label on ``shape``: linear interpolation thresholded at 0.5.

    Returns:
        The label in its own dtype; ``label`` itself when the shape does not change.
    """
    if tuple(label.shape[1:]) == tuple(shape):
        return label
    return (resample(label, shape) >= 0.5).to(label.dtype)


def resampled_affine(affine: np.ndarray, shape: Sequence[int], new_shape: Sequence[int]) -> Any:
    """The voxel-to-world matrix of a grid of ``new_shape`` covering the same extent.

    New voxel ``i`` lies at old voxel coordinate ``(i + 0.5) * n / n' - 0.5`` along each axis
    (``align_corners=False``).
    """
    ratio = np.asarray(shape, dtype=np.float64) / np.asarray(new_shape, dtype=np.float64)
    to_old = np.eye(4)
    to_old[:3, :3] = np.diag(ratio)
    to_old[:3, 3] = 0.5 * ratio - 0.5
    return np.asarray(affine, dtype=np.float64) @ to_old


def predict_at_spacing(
    predict: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    spacing: Sequence[float],
    target: TargetSpacing | None,
) -> torch.Tensor:
    """``predict`` run on ``image`` resampled to ``target``, its output resampled back.

    Args:
        predict: Maps a normalised ``(C, H, W, D)`` image to ``(classes, H, W, D)``
            probabilities (a sliding window).
        image: Normalised image on the input's grid.
        spacing: The input's voxel size (H, W, D) in micrometres.
        target: The model's voxel size; ``None`` predicts on the input's grid directly.

    Returns:
        Probabilities with exactly ``image``'s spatial shape (linear interpolation keeps them
        in [0, 1] and summing to 1 over classes).
    """
    if target is None:
        return predict(image)
    shape = tuple(image.shape[1:])
    probs = predict(resample(image, resampled_shape(shape, spacing, target)))
    return resample(probs, shape)


class ResampleToSpacingd(MapTransform):
    """Resample an item's image (linear) and label (linear, >= 0.5) to a target voxel size.

    The voxel size of each item is read from the image's affine, and the affines of both keys
    are updated to the new grid.

    Args:
        target: Voxel size (H, W, D) in micrometres; ``None`` entries keep an axis.
        image_key: Key of the ``(C, H, W, D)`` image.
        label_key: Key of the binary ``(C, H, W, D)`` label on the same grid.
    """

    def __init__(self, target: TargetSpacing, image_key: str, label_key: str) -> None:
        super().__init__([image_key, label_key])
        self.target = tuple(target)
        self.image_key = image_key
        self.label_key = label_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a shallow copy of ``data`` with both keys on the resampled grid."""
        d = dict(data)
        image = d[self.image_key]
        affine = np.asarray(getattr(image, "affine", np.eye(4)), dtype=np.float64)
        shape = tuple(int(s) for s in image.shape[1:])
        new_shape = resampled_shape(shape, spacing_from_affine(affine), self.target)
        if new_shape == shape:
            return d
        new_affine = torch.as_tensor(resampled_affine(affine, shape, new_shape))
        for key, values in (
            (self.image_key, resample(image, new_shape)),
            (self.label_key, resample_label(d[self.label_key], new_shape)),
        ):
            meta = {k: v for k, v in getattr(d[key], "meta", {}).items() if k != "affine"}
            d[key] = MetaTensor(torch.as_tensor(values), affine=new_affine, meta=meta)
        return d
