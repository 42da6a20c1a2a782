"""TorchIO augmentation of training patches, as a MONAI dictionary transform.

TorchIO draws its random numbers from torch's global generator. :class:`RandTorchIOd` seeds
that generator from its own MONAI random state inside a forked RNG context, so the augmentation
follows MONAI's seeding rules (``Compose`` seeds its transforms from
``monai.utils.set_determinism``; ``monai.data.DataLoader`` reseeds them per worker and epoch)
and leaves the caller's global RNG untouched.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
import torchio as tio
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable
from monai.utils import convert_to_dst_type

from minivess.config.data import AugmentationConfig

_SEED_LIMIT = 2**31


def build_torchio(cfg: AugmentationConfig) -> tio.Compose | None:
    """The TorchIO pipeline for ``cfg``; ``None`` when disabled or every probability is 0.

    Spatial transforms come first and act on the label too (TorchIO resamples a ``LabelMap``
    with nearest neighbours, so it stays binary). Intensity transforms act on the image only,
    with noise last so that gamma never sees negative intensities.

    The transforms change the subject they are given instead of deep-copying it at every step
    (TorchIO's default): a deep copy of a patch that views a cached volume copies the whole
    volume. :class:`RandTorchIOd` hands them copies of the patches.

    Args:
        cfg: Augmentation settings.

    Returns:
        A ``torchio.Compose``, or ``None`` when there is nothing to apply.
    """
    if not cfg.enabled:
        return None
    flip, affine, elastic = cfg.flip, cfg.affine, cfg.elastic
    aniso, bias = cfg.anisotropy, cfg.bias_field
    candidates: list[tuple[float, tio.Transform]] = [
        (flip.p, tio.RandomFlip(axes=flip.axes, flip_probability=flip.p, copy=False)),
        (
            affine.p,
            tio.RandomAffine(scales=affine.scales, degrees=affine.degrees, p=affine.p, copy=False),
        ),
        (
            elastic.p,
            tio.RandomElasticDeformation(
                num_control_points=elastic.num_control_points,
                max_displacement=elastic.max_displacement,
                p=elastic.p,
                copy=False,
            ),
        ),
        (
            aniso.p,
            tio.RandomAnisotropy(
                axes=aniso.axes, downsampling=aniso.downsampling, p=aniso.p, copy=False
            ),
        ),
        (
            bias.p,
            tio.RandomBiasField(
                coefficients=bias.coefficients, order=bias.order, p=bias.p, copy=False
            ),
        ),
        (cfg.gamma.p, tio.RandomGamma(log_gamma=cfg.gamma.log_gamma, p=cfg.gamma.p, copy=False)),
        (cfg.blur.p, tio.RandomBlur(std=cfg.blur.std, p=cfg.blur.p, copy=False)),
        (cfg.noise.p, tio.RandomNoise(std=cfg.noise.std, p=cfg.noise.p, copy=False)),
    ]
    transforms = [transform for p, transform in candidates if p > 0]
    return tio.Compose(transforms, copy=False) if transforms else None


def _affine_of(tensor: Any) -> np.ndarray:
    """The voxel-to-world affine of a MetaTensor (identity for a plain tensor)."""
    if isinstance(tensor, MetaTensor):
        return np.asarray(tensor.affine, dtype=np.float64)
    return np.eye(4)


def _own_copy(tensor: Any) -> torch.Tensor:
    """A plain tensor holding a copy of just these voxels (a crop may view a whole volume)."""
    return torch.as_tensor(tensor).as_subclass(torch.Tensor).clone()


class RandTorchIOd(Randomizable, MapTransform):
    """Apply a TorchIO transform to an image/label pair, reproducibly under MONAI seeding.

    The pair becomes a ``tio.Subject`` of a ``ScalarImage`` and a ``LabelMap`` sharing the
    image's affine, so spatial transforms move both identically and in world units, while
    TorchIO's intensity transforms skip the label. The transform receives copies of just the
    two patches, so it may work in place (``copy=False``). Outputs keep the input types, dtypes
    and metadata.

    Args:
        transform: The TorchIO transform (usually from :func:`build_torchio`).
        image_key: Key of the ``(C, H, W, D)`` image.
        label_key: Key of the ``(C, H, W, D)`` label.

    Example:
        >>> import torchio as tio
        >>> flip = RandTorchIOd(tio.RandomFlip(axes=(0,), flip_probability=1.0))
        >>> image = torch.arange(4.0).reshape(1, 4, 1, 1)
        >>> out = flip({"image": image, "label": (image > 2).to(torch.uint8)})
        >>> out["image"].flatten().tolist(), out["label"].flatten().tolist()
        ([3.0, 2.0, 1.0, 0.0], [1, 0, 0, 0])
    """

    def __init__(
        self, transform: tio.Transform, image_key: str = "image", label_key: str = "label"
    ) -> None:
        super().__init__([image_key, label_key])
        self.transform = transform
        self.image_key = image_key
        self.label_key = label_key
        self._seed = 0

    def randomize(self, data: Any = None) -> None:
        """Draw the seed TorchIO will use for the next call from this transform's state."""
        self._seed = int(self.R.randint(_SEED_LIMIT))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with the image and label augmented together."""
        d = dict(data)
        image, label = d[self.image_key], d[self.label_key]
        affine = _affine_of(image)
        subject = tio.Subject(
            image=tio.ScalarImage(tensor=_own_copy(image), affine=affine),
            label=tio.LabelMap(tensor=_own_copy(label), affine=affine),
        )
        self.randomize()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seed)
            out = self.transform(subject)
        assert isinstance(out, tio.Subject)  # a Subject in gives a Subject out
        new_image, new_label = out.get_image("image").data, out.get_image("label").data
        d[self.image_key] = convert_to_dst_type(new_image, image, dtype=image.dtype)[0]
        d[self.label_key] = convert_to_dst_type(new_label, label, dtype=label.dtype)[0]
        return d


def build_augmentation(
    cfg: AugmentationConfig, image_key: str = "image", label_key: str = "label"
) -> RandTorchIOd | None:
    """The MONAI transform augmenting training patches per ``cfg``, or ``None`` for none.

    Args:
        cfg: Augmentation settings.
        image_key: Key of the image in the data dict.
        label_key: Key of the label in the data dict.
    """
    transform = build_torchio(cfg)
    return None if transform is None else RandTorchIOd(transform, image_key, label_key)
