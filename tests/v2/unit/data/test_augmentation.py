from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose
from monai.utils import set_determinism

from minivess.config.data import AugmentationConfig
from minivess.data.augmentation import RandTorchIOd, build_augmentation, build_torchio

NAMES = ("flip", "affine", "elastic", "anisotropy", "bias_field", "gamma", "blur", "noise")
SPATIAL = ("flip", "affine", "elastic")
SPACING = (1.0, 1.0, 3.0)


def _only(name: str, **params: Any) -> AugmentationConfig:
    """A config applying just ``name``, always."""
    settings: dict[str, Any] = {other: {"p": 0.0} for other in NAMES}
    settings[name] = {"p": 1.0, **params}
    return AugmentationConfig(**settings)


def _patch(seed: int = 0, shape: tuple[int, int, int] = (16, 16, 8)) -> dict[str, Any]:
    """A normalised image patch whose bright voxels are the label (a blob plus a tube)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape)
    centre = np.array(shape)[:, None, None, None] / 2
    radius = np.sqrt((((grid - centre) / np.array([5, 5, 3])[:, None, None, None]) ** 2).sum(0))
    label = (radius < 1).astype(np.uint8)
    label[2:14, 3, 3] = 1
    image = 0.8 * label + 0.1 * rng.random(shape)
    affine = torch.diag(torch.tensor([*SPACING, 1.0], dtype=torch.float64))
    return {
        "image": MetaTensor(torch.as_tensor(image[None], dtype=torch.float32), affine=affine),
        "label": MetaTensor(torch.as_tensor(label[None]), affine=affine),
    }


def _augment(cfg: AugmentationConfig, data: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    transform = build_augmentation(cfg)
    assert transform is not None
    transform.set_random_state(seed=seed)
    return transform(data)


def test_disabled_or_all_zero_probabilities_build_nothing() -> None:
    assert build_torchio(AugmentationConfig(enabled=False)) is None
    assert build_augmentation(AugmentationConfig(**{n: {"p": 0.0} for n in NAMES})) is None


def test_only_transforms_with_nonzero_probability_are_built() -> None:
    transform = build_torchio(_only("gamma"))
    assert transform is not None
    assert [type(t).__name__ for t in transform.transforms] == ["RandomGamma"]


@pytest.mark.parametrize("name", NAMES)
def test_each_augmentation_changes_the_image(name: str) -> None:
    data = _patch()
    params = {"max_displacement": (1.5, 1.5, 1.0)} if name == "elastic" else {}
    out = _augment(_only(name, **params), data, seed=3)
    assert out["image"].shape == data["image"].shape
    assert not torch.equal(out["image"], data["image"])


@pytest.mark.parametrize("name", ["anisotropy", "bias_field", "gamma", "blur", "noise"])
def test_intensity_augmentations_leave_the_label_alone(name: str) -> None:
    data = _patch()
    out = _augment(_only(name), data)
    assert torch.equal(out["label"], data["label"])


def test_flip_moves_image_and_label_together() -> None:
    data = _patch()
    out = _augment(_only("flip", axes=(0,)), data)
    assert torch.equal(out["image"], torch.flip(data["image"], dims=[1]))
    assert torch.equal(out["label"], torch.flip(data["label"], dims=[1]))


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("affine", {"degrees": (0.0, 0.0, 30.0), "scales": (0.8, 1.2)}),
        ("elastic", {"max_displacement": (1.5, 1.5, 1.0)}),
    ],
)
def test_spatial_augmentations_keep_the_label_binary_and_aligned(
    name: str, params: dict[str, Any]
) -> None:
    data = _patch()
    out = _augment(_only(name, **params), data, seed=1)
    label, image = out["label"], out["image"]
    assert label.dtype == torch.uint8
    assert set(torch.unique(label).tolist()) <= {0, 1}
    assert not torch.equal(label, data["label"])
    # The bright voxels moved with the label: thresholding the image recovers it.
    agreement = ((image > 0.45) == (label > 0)).float().mean().item()
    assert agreement > 0.95


def test_types_dtypes_and_geometry_are_kept() -> None:
    data = _patch()
    out = _augment(AugmentationConfig(), data)
    for key in ("image", "label"):
        assert isinstance(out[key], MetaTensor)
        assert out[key].dtype == data[key].dtype
        assert torch.equal(out[key].affine, data[key].affine)


def test_same_seed_gives_the_same_patch_and_another_seed_does_not() -> None:
    cfg = AugmentationConfig(noise={"p": 1.0}, affine={"p": 1.0}, gamma={"p": 1.0})
    first = _augment(cfg, _patch(), seed=7)
    again = _augment(cfg, _patch(), seed=7)
    other = _augment(cfg, _patch(), seed=8)
    assert torch.equal(first["image"], again["image"])
    assert torch.equal(first["label"], again["label"])
    assert not torch.equal(first["image"], other["image"])


def test_set_determinism_makes_a_composed_pipeline_reproducible() -> None:
    cfg = AugmentationConfig(noise={"p": 1.0}, affine={"p": 1.0})
    outputs = []
    for _ in range(2):
        set_determinism(seed=123)
        pipeline = Compose([build_augmentation(cfg)])
        outputs.append([pipeline(_patch())["image"] for _ in range(3)])
    set_determinism(seed=None)
    for first, second in zip(*outputs, strict=True):
        assert torch.equal(first, second)
    assert not torch.equal(outputs[0][0], outputs[0][1])


def test_the_callers_global_rng_is_left_untouched() -> None:
    transform = build_augmentation(AugmentationConfig(noise={"p": 1.0}))
    assert isinstance(transform, RandTorchIOd)
    state = torch.get_rng_state()
    transform(_patch())
    assert torch.equal(torch.get_rng_state(), state)


def test_plain_tensors_are_accepted() -> None:
    data = {k: v.as_tensor() for k, v in _patch().items()}
    out = _augment(_only("flip", axes=(2,)), data)
    assert type(out["image"]) is torch.Tensor
    assert torch.equal(out["label"], torch.flip(data["label"], dims=[3]))
