"""MONAI dictionary transforms that turn prepared NIfTI pairs into training patches.

Every data item is a dict ``{"id": str, "image": path, "label": path}``. The training pipeline
comes in two parts so that the costly deterministic one can be cached (see
:mod:`minivess.data.datasets`):

1. deterministic: decode the NIfTI pair, put the channel first (``(1, H, W, D)``), map the
   image's intensity percentiles to [0, 1], resample to ``target_spacing_um`` when it is set
   (:mod:`minivess.data.resample`), zero-pad up to the patch size, list foreground and
   background voxels once, so that random crops never scan the label again, and store the label
   as ``uint8``;
2. random: crop ``samples_per_volume`` patches centred on vessel or background voxels in the
   configured ratio, then augment them with TorchIO.

Validation items are whole volumes on their own grid, loaded and normalised only: validation
is sliding-window inference, which pads by itself and, for a resampling model, resamples to the
target spacing and back as prediction does, so validation metrics are taken at the original
spacing.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor, NibabelReader
from monai.transforms import (
    CastToTyped,
    Compose,
    EnsureChannelFirstd,
    FgBgToIndicesd,
    LoadImaged,
    MapTransform,
    RandCropByPosNegLabeld,
    ScaleIntensityRangePercentiles,
    ScaleIntensityRangePercentilesd,
    SpatialPadd,
)

from minivess.config.data import DataConfig
from minivess.data.augmentation import build_augmentation
from minivess.data.resample import ResampleToSpacingd

IMAGE_KEY = "image"
LABEL_KEY = "label"
FG_INDICES_KEY = f"{LABEL_KEY}_fg_indices"
BG_INDICES_KEY = f"{LABEL_KEY}_bg_indices"

#: Metadata kept from the NIfTI header: geometry and provenance. The rest of the header holds
#: NumPy arrays that ``torch.load(weights_only=True)`` refuses, which would make every disk-cache
#: read fail and silently recompute.
_KEPT_META = ("affine", "space", "filename_or_obj", "original_channel_dim")
_PRUNE_OTHER_META = rf"^(?!({'|'.join(_KEPT_META)})$)"


class CompactForCached(MapTransform):
    """Make a loaded item small and safe to cache: int32 voxel indices, no transform history.

    Foreground/background indices take one integer per voxel, more than the image itself, so
    they are stored as int32 whenever the volume has fewer than 2**31 voxels. The history of
    applied transforms is dropped: nothing inverts the cached steps (training patches are never
    mapped back), and its entries hold MONAI enums that ``torch.load(weights_only=True)``
    refuses to read from a disk cache.

    Args:
        index_keys: Keys holding flat voxel indices (from ``FgBgToIndicesd``).
        keys: Keys whose MetaTensors lose their transform history.
    """

    def __init__(self, index_keys: tuple[str, ...], keys: tuple[str, ...]) -> None:
        super().__init__(keys)
        self.index_keys = index_keys

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a shallow copy of ``data`` with compact indices and no transform history."""
        d = dict(data)
        for key in self.index_keys:
            indices = torch.as_tensor(d[key])
            if indices.numel() == 0 or int(indices.max()) < np.iinfo(np.int32).max:
                indices = indices.to(torch.int32)
            d[key] = indices.as_tensor() if isinstance(indices, MetaTensor) else indices
        for key in self.key_iterator(d):
            if isinstance(d[key], MetaTensor):
                d[key].applied_operations = []
        return d


def load_transforms() -> list[MapTransform]:
    """Decode an image/label NIfTI pair into float32 ``(1, H, W, D)`` MetaTensors with affines.

    The label stays float32 here; the pipelines make it uint8 once foreground indices are
    listed (see :func:`label_to_uint8`).

    Returns:
        Transforms for a ``{"image": path, "label": path}`` item.
    """
    keys = [IMAGE_KEY, LABEL_KEY]
    return [
        LoadImaged(keys, reader=NibabelReader, prune_meta_pattern=_PRUNE_OTHER_META),
        EnsureChannelFirstd(keys),
    ]


def label_to_uint8() -> MapTransform:
    """Store the {0, 1} label as uint8: a quarter of the memory of float32 in a cache.

    It must come after ``FgBgToIndicesd``: MONAI 1.6 lists background voxels as
    ``nonzero(~torch.any(label, 0))``, and ``torch.any`` keeps uint8, whose bitwise ``~`` is
    never zero, so a uint8 label would make every voxel count as background.
    """
    return CastToTyped(LABEL_KEY, dtype=torch.uint8)


def normalize_transform(cfg: DataConfig) -> MapTransform:
    """Map the image's lower/upper intensity percentiles to 0 and 1, clipping beyond.

    Percentiles are taken per volume, so volumes from different microscopes and gains land on
    the same scale.
    """
    lower, upper = cfg.intensity_percentiles
    return ScaleIntensityRangePercentilesd(
        IMAGE_KEY, lower=lower, upper=upper, b_min=0.0, b_max=1.0, clip=True
    )


def normalise_intensity(
    image: np.ndarray | torch.Tensor, percentiles: tuple[float, float]
) -> torch.Tensor:
    """The same percentile normalisation as training, for one (C, H, W, D) image at prediction.

    Args:
        image: Raw intensities, channel first.
        percentiles: ``(lower, upper)`` percentiles mapped to 0 and 1 (clipped beyond), as in
            ``DataConfig.intensity_percentiles`` (stored in every checkpoint).

    Returns:
        float32 tensor of the same shape.
    """
    lower, upper = percentiles
    scale = ScaleIntensityRangePercentiles(
        lower=lower, upper=upper, b_min=0.0, b_max=1.0, clip=True
    )
    out = scale(torch.as_tensor(np.asarray(image, dtype=np.float32)))
    return (out.as_tensor() if isinstance(out, MetaTensor) else torch.as_tensor(out)).float()


def train_transforms(cfg: DataConfig) -> tuple[Compose, Compose]:
    """The training pipeline, split at the cache boundary.

    Args:
        cfg: Data settings (percentiles, patch size, sampling ratio, augmentation).

    Returns:
        ``(deterministic, random)``. ``deterministic`` maps an item to one padded, normalised
        volume with precomputed foreground/background indices and is what a cache stores;
        ``random`` maps that to a list of ``samples_per_volume`` augmented patches of shape
        ``(1, *patch_size)``.

    Example:
        >>> det, rand = train_transforms(
        ...     DataConfig(dataset_dir="d", splits_file="s.json", patch_size=(32, 32, 8))
        ... )
        >>> type(rand.transforms[0]).__name__
        'RandCropByPosNegLabeld'
    """
    keys = [IMAGE_KEY, LABEL_KEY]
    resampling = (
        [ResampleToSpacingd(cfg.target_spacing_um, IMAGE_KEY, LABEL_KEY)]
        if cfg.target_spacing_um is not None
        else []
    )
    deterministic = Compose(
        [
            *load_transforms(),
            normalize_transform(cfg),
            # After normalising, as prediction does: percentiles of the volume as acquired.
            *resampling,
            # Padding before listing indices keeps every crop centre valid for the padded volume.
            SpatialPadd(keys, spatial_size=cfg.patch_size, mode="constant", value=0),
            FgBgToIndicesd(LABEL_KEY),
            label_to_uint8(),
            CompactForCached(index_keys=(FG_INDICES_KEY, BG_INDICES_KEY), keys=tuple(keys)),
        ]
    )
    pos, neg = cfg.pos_neg_ratio
    random_part: list[Any] = [
        RandCropByPosNegLabeld(
            keys,
            label_key=LABEL_KEY,
            spatial_size=cfg.patch_size,
            pos=pos,
            neg=neg,
            num_samples=cfg.samples_per_volume,
            fg_indices_key=FG_INDICES_KEY,
            bg_indices_key=BG_INDICES_KEY,
        )
    ]
    augmentation = build_augmentation(cfg.augmentation, IMAGE_KEY, LABEL_KEY)
    if augmentation is not None:
        random_part.append(augmentation)
    return deterministic, Compose(random_part)


def val_transforms(cfg: DataConfig) -> Compose:
    """Whole validation volumes, loaded and normalised exactly as for training, not cropped."""
    return Compose(
        [
            *load_transforms(),
            normalize_transform(cfg),
            label_to_uint8(),
            CompactForCached(index_keys=(), keys=(IMAGE_KEY, LABEL_KEY)),
        ]
    )
