"""Resampling to a target voxel size: shapes, identity, labels, affines, training pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from minivess.config.data import DataConfig
from minivess.data.datasets import build_datasets
from minivess.data.prepare import PreparedDataset
from minivess.data.resample import (
    ResampleToSpacingd,
    predict_at_spacing,
    resample,
    resample_label,
    resampled_affine,
    resampled_shape,
)
from minivess.data.transforms import train_transforms
from minivess.data.volume import affine_from_spacing, spacing_from_affine


def test_shape_keeps_the_physical_extent() -> None:
    # VesselNN: santos2015 (0.621 um) and poon2015_plaqueVessels (2.485 um) at 0.994 um
    assert resampled_shape((512, 512, 15), (0.621, 0.621, 5.0), (0.994, 0.994, None)) == (
        320,
        320,
        15,
    )
    assert resampled_shape((512, 512, 14), (2.485, 2.485, 5.0), (0.994, 0.994, None)) == (
        1280,
        1280,
        14,
    )
    assert resampled_shape((3, 3, 1), (1.0, 1.0, 1.0), (100.0, 100.0, 100.0)) == (1, 1, 1)


def test_own_spacing_is_no_resampling_bit_for_bit() -> None:
    image = torch.rand(1, 20, 18, 6)
    shape = resampled_shape(image.shape[1:], (1.5, 1.5, 5.0), (1.5, 1.5, 5.0))
    assert resample(image, shape) is image
    label = image > 0.5
    assert resample_label(label, shape) is label


def test_axes_that_keep_their_size_are_not_blurred() -> None:
    # Only depth changes: the in-plane axes are interpolated at scale 1, which must not blur.
    plane = torch.rand(1, 12, 10, 1)
    stack = plane.expand(1, 12, 10, 4).contiguous()
    out = resample(stack, (12, 10, 8))
    assert out.shape == (1, 12, 10, 8)
    for k in range(8):
        assert torch.allclose(out[..., k], plane[..., 0], atol=1e-6)


def test_label_keeps_a_vessel_of_the_same_width_in_micrometres() -> None:
    label = torch.zeros(1, 64, 64, 2, dtype=torch.uint8)
    label[0, :, 30:36, :] = 1  # 6 voxels at 1 um: 6 um wide
    coarse = resample_label(label, (32, 32, 2))  # 2 um voxels
    assert coarse.dtype == torch.uint8
    assert set(coarse.unique().tolist()) == {0, 1}
    assert int(coarse[0, 10, :, 0].sum()) == 3  # still 6 um


def test_affine_places_the_new_grid_over_the_same_extent() -> None:
    affine = affine_from_spacing((2.0, 2.0, 5.0))
    affine[:3, 3] = (10.0, 20.0, 30.0)
    new = resampled_affine(affine, (20, 20, 5), (40, 40, 5))
    assert spacing_from_affine(new) == pytest.approx((1.0, 1.0, 5.0))
    # the outer edge of voxel 0 (half a voxel before its centre) does not move
    old_edge = affine @ np.array([-0.5, -0.5, -0.5, 1.0])
    new_edge = new @ np.array([-0.5, -0.5, -0.5, 1.0])
    assert new_edge == pytest.approx(old_edge)


def test_predict_at_spacing_runs_at_the_target_and_returns_the_input_shape() -> None:
    seen: list[tuple[int, ...]] = []

    def predict(image: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(image.shape[1:]))
        p = image.clamp(0, 1)
        return torch.cat([1 - p, p])

    image = torch.rand(1, 30, 24, 7)
    probs = predict_at_spacing(predict, image, (0.5, 0.5, 5.0), (1.0, 1.0, None))
    assert seen == [(15, 12, 7)]
    assert probs.shape == (2, 30, 24, 7)
    assert torch.allclose(probs.sum(0), torch.ones(30, 24, 7), atol=1e-6)
    assert torch.equal(predict_at_spacing(predict, image, (0.5, 0.5, 5.0), None), predict(image))


def test_the_dict_transform_resamples_image_label_and_affine_together() -> None:
    affine = torch.as_tensor(affine_from_spacing((1.0, 1.0, 5.0)))
    image = MetaTensor(torch.rand(1, 40, 40, 6), affine=affine)
    label = MetaTensor((torch.rand(1, 40, 40, 6) > 0.8).float(), affine=affine.clone())
    out = ResampleToSpacingd((2.0, 2.0, None), "image", "label")({"image": image, "label": label})
    assert out["image"].shape == out["label"].shape == (1, 20, 20, 6)
    for key in ("image", "label"):
        assert spacing_from_affine(out[key].affine.numpy()) == pytest.approx((2.0, 2.0, 5.0))
    assert set(out["label"].unique().tolist()) <= {0.0, 1.0}


def _cfg(prepared: PreparedDataset, **extra: object) -> DataConfig:
    values: dict[str, object] = {
        "dataset_dir": prepared.out,
        "splits_file": prepared.out / "splits.json",
        "patch_size": (16, 16, 16),
        "cache": "none",
        "augmentation": {"enabled": False},
    }
    return DataConfig.model_validate({**values, **extra})


def _first_item(prepared: PreparedDataset) -> dict[str, str]:
    row = prepared.manifest.iloc[0]
    return {
        "id": str(row["id"]),
        "image": str(prepared.out / row["image"]),
        "label": str(prepared.out / row["label"]),
    }


def test_training_volumes_are_resampled_before_patches_are_drawn(
    prepared_synthetic: PreparedDataset,
) -> None:
    item = _first_item(prepared_synthetic)
    plain, _ = train_transforms(_cfg(prepared_synthetic))
    coarse, _ = train_transforms(_cfg(prepared_synthetic, target_spacing_um=(2.0, 2.0, None)))
    a, b = plain(dict(item)), coarse(dict(item))
    assert a["image"].shape == (1, 64, 64, 16)  # the synthetic volumes: 64x64x16 at 1x1x5 um
    assert b["image"].shape == b["label"].shape == (1, 32, 32, 16)
    assert spacing_from_affine(b["image"].affine.numpy()) == pytest.approx((2.0, 2.0, 5.0))
    assert b["label"].dtype == torch.uint8
    # the vessel fraction survives the resampling (linear + threshold keeps widths in um)
    fraction_a = float(a["label"].float().mean())
    fraction_b = float(b["label"].float().mean())
    assert fraction_b == pytest.approx(fraction_a, rel=0.25)
    # foreground indices are listed on the resampled grid
    assert int(b["label_fg_indices"].numel()) == int(b["label"].sum())


def test_null_and_own_spacing_give_identical_training_data(
    prepared_synthetic: PreparedDataset,
) -> None:
    item = _first_item(prepared_synthetic)
    plain, _ = train_transforms(_cfg(prepared_synthetic))
    own, _ = train_transforms(_cfg(prepared_synthetic, target_spacing_um=(1.0, 1.0, 5.0)))
    a, b = plain(dict(item)), own(dict(item))
    for key in ("image", "label", "label_fg_indices", "label_bg_indices"):
        assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), key
    assert torch.equal(a["image"].affine, b["image"].affine)


def test_validation_volumes_stay_on_their_own_grid(prepared_synthetic: PreparedDataset) -> None:
    _, val = build_datasets(_cfg(prepared_synthetic, target_spacing_um=(2.0, 2.0, None)))
    assert val[0]["image"].shape == (1, 64, 64, 16)


def test_the_disk_cache_separates_spacings(prepared_synthetic: PreparedDataset, tmp_path: Path):
    from minivess.data.datasets import _cache_subdir

    plain = _cfg(prepared_synthetic, cache="disk", cache_dir=tmp_path)
    coarse = _cfg(
        prepared_synthetic, cache="disk", cache_dir=tmp_path, target_spacing_um=(2.0, 2.0, None)
    )
    assert _cache_subdir(plain, "train") != _cache_subdir(coarse, "train")
    assert _cache_subdir(plain, "val") == _cache_subdir(coarse, "val")
