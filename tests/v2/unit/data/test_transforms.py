from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from minivess.config.data import DataConfig
from minivess.data.io import write_nifti
from minivess.data.transforms import (
    BG_INDICES_KEY,
    FG_INDICES_KEY,
    load_transforms,
    train_transforms,
    val_transforms,
)
from minivess.data.volume import Volume, affine_from_spacing

SHAPE = (32, 32, 12)
PATCH = (16, 16, 8)
SPACING = (0.5, 0.5, 2.0)


def _label(shape: tuple[int, int, int]) -> np.ndarray:
    """Two straight vessels well inside the volume, so crop centres on them need no shifting."""
    label = np.zeros(shape, np.uint8)
    label[10:22, 15:17, shape[2] // 2] = 1
    label[12, 10:22, 4 : shape[2] - 4] = 1
    return label


def _write_pair(folder: Path, shape: tuple[int, int, int] = SHAPE, seed: int = 0) -> dict[str, str]:
    """An image/label NIfTI pair as the prepare step writes it; returns the data item."""
    rng = np.random.default_rng(seed)
    label = _label(shape)
    image = (40 + 150 * label + rng.integers(0, 60, shape)).astype(np.uint16)
    like = Volume(np.zeros(shape, np.uint8), affine_from_spacing(SPACING))
    item = {
        "id": "case",
        "image": str(folder / "image.nii.gz"),
        "label": str(folder / "label.nii.gz"),
    }
    write_nifti(item["image"], image, like)
    write_nifti(item["label"], label, like)
    return item


def _cfg(**overrides: Any) -> DataConfig:
    settings: dict[str, Any] = {"patch_size": PATCH, "augmentation": {"enabled": False}}
    settings.update(overrides)
    return DataConfig(dataset_dir="unused", splits_file="unused.json", **settings)


def _centre_labels(patches: list[dict[str, Any]]) -> list[int]:
    centre = tuple(s // 2 for s in PATCH)
    return [int(p["label"][(0, *centre)]) for p in patches]


def test_load_gives_channel_first_tensors_with_geometry(tmp_path: Path) -> None:
    item = _write_pair(tmp_path)
    out: Any = item
    for transform in load_transforms():
        out = transform(out)
    assert out["image"].shape == (1, *SHAPE)
    assert out["image"].dtype == torch.float32
    assert np.array_equal(out["label"][0].numpy(), _label(SHAPE))
    assert isinstance(out["image"], MetaTensor)
    assert np.allclose(np.diag(out["image"].affine.numpy())[:3], SPACING)


def test_validation_volumes_are_normalised_whole(tmp_path: Path) -> None:
    item = _write_pair(tmp_path)
    out = val_transforms(_cfg(intensity_percentiles=(1.0, 99.0)))(item)
    image = out["image"]
    assert image.shape == (1, *SHAPE)
    assert out["label"].dtype == torch.uint8
    assert np.array_equal(out["label"][0].numpy(), _label(SHAPE))
    assert float(image.min()) == 0.0
    assert float(image.max()) == 1.0
    # Clipping: at least 1% of voxels sit exactly at each end.
    assert (image == 0).float().mean() >= 0.01
    assert (image == 1).float().mean() >= 0.01


def test_percentiles_are_per_volume(tmp_path: Path) -> None:
    """A brighter acquisition of the same scene normalises to the same values."""
    item = _write_pair(tmp_path)
    like = Volume(np.zeros(SHAPE, np.uint8), affine_from_spacing(SPACING))
    rng = np.random.default_rng(0)
    bright = 3 * (40 + 150 * _label(SHAPE) + rng.integers(0, 60, SHAPE)).astype(np.uint16)
    bright_item = {**item, "image": str(tmp_path / "bright.nii.gz")}
    write_nifti(bright_item["image"], bright, like)
    transform = val_transforms(_cfg())
    assert torch.allclose(transform(item)["image"], transform(bright_item)["image"], atol=1e-6)


def test_deterministic_part_pads_to_the_patch_and_lists_every_voxel(tmp_path: Path) -> None:
    item = _write_pair(tmp_path, shape=(32, 32, 10))
    deterministic, _ = train_transforms(_cfg(patch_size=(16, 16, 16)))
    out = deterministic(item)
    assert out["image"].shape == (1, 32, 32, 16)
    assert out["label"].shape == (1, 32, 32, 16)
    assert out["label"].dtype == torch.uint8
    assert int(out["label"].sum()) == int(_label((32, 32, 10)).sum())
    fg, bg = out[FG_INDICES_KEY], out[BG_INDICES_KEY]
    assert fg.dtype == torch.int32
    assert len(fg) == int(out["label"].sum())
    assert len(fg) + len(bg) == 32 * 32 * 16
    flat = out["label"].flatten()
    assert bool((flat[fg.long()] == 1).all())
    assert bool((flat[bg.long()] == 0).all())


def test_deterministic_part_is_repeatable(tmp_path: Path) -> None:
    item = _write_pair(tmp_path)
    deterministic, _ = train_transforms(_cfg())
    first, second = deterministic(item), deterministic(item)
    for key in first.keys() - {"id"}:
        assert torch.equal(torch.as_tensor(first[key]), torch.as_tensor(second[key]))


def test_random_part_crops_samples_per_volume_patches(tmp_path: Path) -> None:
    item = _write_pair(tmp_path)
    deterministic, random_part = train_transforms(_cfg(samples_per_volume=3))
    patches = random_part(deterministic(item))
    assert len(patches) == 3
    for patch in patches:
        assert patch["image"].shape == (1, *PATCH)
        assert patch["label"].shape == (1, *PATCH)
        assert patch["label"].dtype == torch.uint8
        assert patch["id"] == "case"
        assert FG_INDICES_KEY not in patch


@pytest.mark.parametrize(("ratio", "expected"), [((1.0, 0.0), 1.0), ((0.0, 1.0), 0.0)])
def test_one_sided_sampling_centres_every_patch_accordingly(
    tmp_path: Path, ratio: tuple[float, float], expected: float
) -> None:
    item = _write_pair(tmp_path)
    deterministic, random_part = train_transforms(_cfg(pos_neg_ratio=ratio, samples_per_volume=40))
    random_part.set_random_state(seed=0)
    centres = _centre_labels(random_part(deterministic(item)))
    if expected == 1.0:
        assert all(centres)
    else:
        # Background centres near the border are shifted inwards and may land on a vessel.
        assert np.mean(centres) < 0.1


def test_pos_neg_ratio_is_honoured(tmp_path: Path) -> None:
    item = _write_pair(tmp_path)
    deterministic, random_part = train_transforms(
        _cfg(pos_neg_ratio=(3.0, 1.0), samples_per_volume=400)
    )
    random_part.set_random_state(seed=0)
    on_vessel = np.mean(_centre_labels(random_part(deterministic(item))))
    # 3:1 odds give 75% vessel-centred patches (plus a few shifted background ones).
    assert 0.68 < on_vessel < 0.85


def test_augmentation_joins_the_random_part_only_when_enabled() -> None:
    _, plain = train_transforms(_cfg())
    _, augmented = train_transforms(_cfg(augmentation={"enabled": True}))
    assert len(augmented.transforms) == len(plain.transforms) + 1


def test_prediction_normalisation_equals_the_training_transform() -> None:
    from minivess.config.data import DataConfig
    from minivess.data.transforms import normalise_intensity, normalize_transform

    raw = np.random.default_rng(0).integers(0, 255, (1, 20, 20, 8)).astype(np.uint8)
    cfg = DataConfig(dataset_dir="unused", splits_file="unused", intensity_percentiles=(2.0, 98.0))
    trained = normalize_transform(cfg)({"image": torch.as_tensor(raw.astype(np.float32))})
    predicted = normalise_intensity(raw, cfg.intensity_percentiles)
    assert type(predicted) is torch.Tensor
    assert torch.equal(predicted, torch.as_tensor(trained["image"]).as_tensor())
