from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from monai.data import CacheDataset, PersistentDataset

from minivess.config.data import DataConfig
from minivess.data.datasets import build_datasets, build_loaders
from minivess.data.io import parse_ome_spacing, read_tiff, write_nifti
from minivess.data.volume import Volume, affine_from_spacing
from minivess.errors import DataError

SHAPE = (32, 32, 12)
PATCH = (16, 16, 8)


def _prepare(
    folder: Path,
    volumes: dict[str, tuple[np.ndarray, np.ndarray]],
    spacing: dict[str, tuple[float, float, float]] | None = None,
    version: str = "1.0",
) -> Path:
    """Write a prepared dataset as the prepare step does: NIfTI pairs, manifest, dataset.json."""
    rows = []
    for case_id, (image, label) in volumes.items():
        like = Volume(image, affine_from_spacing((spacing or {}).get(case_id, (1.0, 1.0, 3.0))))
        write_nifti(folder / "images" / f"{case_id}.nii.gz", image, like)
        write_nifti(folder / "labels" / f"{case_id}.nii.gz", label.astype(np.uint8), like)
        rows.append(
            {
                "id": case_id,
                "image": f"images/{case_id}.nii.gz",
                "label": f"labels/{case_id}.nii.gz",
            }
        )
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    (folder / "dataset.json").write_text(json.dumps({"version": version, "name": "test"}))
    return folder


def _write_splits(
    path: Path, folds: list[tuple[list[str], list[str]]], version: str = "1.0"
) -> Path:
    splits = {
        "name": "test",
        "seed": 0,
        "k": len(folds),
        "dataset_version": version,
        "folds": [{"fold": i, "train": tr, "val": va} for i, (tr, va) in enumerate(folds)],
    }
    path.write_text(json.dumps(splits))
    return path


def _synthetic(seed: int, shape: tuple[int, int, int] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image with a few bright straight vessels and the matching label."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    for _ in range(3):
        x, y = rng.integers(4, shape[0] - 4), rng.integers(4, shape[1] - 4)
        label[x - 1 : x + 1, :, shape[2] // 2] = 1
        label[:, y, 2 : shape[2] - 2] = 1
    image = (30 + 120 * label + rng.integers(0, 50, shape)).astype(np.uint8)
    return image, label


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    ids = ["a", "b", "c", "d"]
    folder = _prepare(tmp_path / "prepared", {i: _synthetic(n) for n, i in enumerate(ids)})
    _write_splits(folder / "splits.json", [(["a", "b", "c"], ["d"]), (["b", "c", "d"], ["a"])])
    return folder


def _cfg(folder: Path, **overrides: Any) -> DataConfig:
    settings: dict[str, Any] = {
        "dataset_dir": folder,
        "splits_file": folder / "splits.json",
        "patch_size": PATCH,
        "samples_per_volume": 2,
        "augmentation": {"enabled": False},
    }
    settings.update(overrides)
    return DataConfig(**settings)


def _delete_volumes(folder: Path) -> None:
    shutil.rmtree(folder / "images")
    shutil.rmtree(folder / "labels")


def _epoch(loader: Any) -> list[dict[str, Any]]:
    return list(loader)


def test_training_items_are_patch_lists_and_validation_items_whole_volumes(dataset: Path) -> None:
    train, val = build_datasets(_cfg(dataset, samples_per_volume=3))
    assert len(train) == 3
    assert len(val) == 1
    patches = train[0]
    assert len(patches) == 3
    assert {tuple(p["image"].shape) for p in patches} == {(1, *PATCH)}
    assert {p["label"].dtype for p in patches} == {torch.uint8}
    assert val[0]["image"].shape == (1, *SHAPE)
    assert val[0]["id"] == "d"


def test_the_fold_selects_the_volumes(dataset: Path) -> None:
    _, val = build_datasets(_cfg(dataset, fold=1, cache="none"))
    assert [item["id"] for item in val] == ["a"]


def test_loader_batches_flatten_patches(dataset: Path) -> None:
    train, val = build_loaders(_cfg(dataset, samples_per_volume=2), batch_size=2, seed=0)
    batch = next(iter(train))
    assert batch["image"].shape == (4, 1, *PATCH)
    assert batch["label"].shape == (4, 1, *PATCH)
    assert batch["image"].dtype == torch.float32
    assert 0.0 <= float(batch["image"].min()) <= float(batch["image"].max()) <= 1.0
    assert set(torch.unique(batch["label"]).tolist()) <= {0, 1}
    whole = next(iter(val))
    assert whole["image"].shape == (1, 1, *SHAPE)


def test_shallow_volumes_are_padded_to_the_patch_depth(tmp_path: Path) -> None:
    folder = _prepare(tmp_path, {"thin": _synthetic(0, (32, 32, 10)), "v": _synthetic(1)})
    _write_splits(folder / "splits.json", [(["thin"], ["v"])])
    train, val = build_datasets(_cfg(folder, patch_size=(16, 16, 16)))
    for patch in train[0]:
        assert patch["image"].shape == (1, 16, 16, 16)
        assert patch["label"].shape == (1, 16, 16, 16)
    assert val[0]["image"].shape == (1, *SHAPE)


@pytest.mark.parametrize(("cache", "kind"), [("memory", CacheDataset), ("disk", PersistentDataset)])
def test_cached_epochs_do_not_read_the_volumes_again(
    dataset: Path, tmp_path: Path, cache: str, kind: type
) -> None:
    cfg = _cfg(dataset, cache=cache, cache_dir=tmp_path / "cache", augmentation={"enabled": True})
    train, val = build_loaders(cfg, batch_size=2, seed=0)
    assert isinstance(train.dataset, kind)
    _epoch(train), _epoch(val)
    _delete_volumes(dataset)
    second = _epoch(train)
    assert sum(batch["image"].shape[0] for batch in second) == 3 * 2
    assert _epoch(val)[0]["image"].shape == (1, 1, *SHAPE)


def test_augmenting_patches_never_alters_the_memory_cache(dataset: Path) -> None:
    """Cached volumes are handed to the random transforms without a copy; they must stay intact."""
    every = {name: {"p": 1.0} for name in ("affine", "bias_field", "gamma", "blur", "noise")}
    train, _ = build_loaders(
        _cfg(dataset, augmentation={**every, "flip": {"p": 1.0, "axes": (0,)}}),
        batch_size=3,
        seed=0,
    )
    cache = train.dataset._cache  # MONAI's list of cached items
    before = [
        {k: torch.as_tensor(v).clone() for k, v in item.items() if k != "id"} for item in cache
    ]
    _epoch(train), _epoch(train)
    for item, snapshot in zip(cache, before, strict=True):
        for key, value in snapshot.items():
            assert torch.equal(torch.as_tensor(item[key]), value)


def test_without_a_cache_every_epoch_reads_the_volumes(dataset: Path) -> None:
    train, _ = build_loaders(_cfg(dataset, cache="none"), batch_size=2, seed=0)
    _epoch(train)
    _delete_volumes(dataset)
    with pytest.raises(RuntimeError):
        _epoch(train)


def test_disk_cache_is_reused_by_a_later_run(dataset: Path, tmp_path: Path) -> None:
    cfg = _cfg(dataset, cache="disk", cache_dir=tmp_path / "cache")
    first_train, first_val = build_datasets(cfg)
    expected = first_val[0]["image"]
    [first_train[i] for i in range(len(first_train))]
    # Volumes that can no longer be decoded prove that the second run reads only the cache.
    for path in [*(dataset / "images").iterdir(), *(dataset / "labels").iterdir()]:
        path.write_bytes(b"not a NIfTI file")
    train, val = build_datasets(cfg)
    assert len(train[0]) == 2
    assert torch.equal(val[0]["image"], expected)


def test_disk_cache_is_not_reused_after_changing_normalisation(
    dataset: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    _, val = build_datasets(_cfg(dataset, cache="disk", cache_dir=cache))
    default = val[0]["image"]
    _, val = build_datasets(
        _cfg(dataset, cache="disk", cache_dir=cache, intensity_percentiles=(20.0, 80.0))
    )
    assert not torch.equal(val[0]["image"], default)


def test_same_seed_gives_the_same_first_batch(dataset: Path) -> None:
    cfg = _cfg(dataset, augmentation={"noise": {"p": 1.0}, "affine": {"p": 0.5}})
    first = [next(iter(build_loaders(cfg, batch_size=2, seed=s)[0])) for s in (5, 5, 6)]
    assert first[0]["id"] == first[1]["id"]
    assert torch.equal(first[0]["image"], first[1]["image"])
    assert torch.equal(first[0]["label"], first[1]["label"])
    assert not torch.equal(first[0]["image"], first[2]["image"])


def test_same_seed_gives_the_same_first_batch_with_workers(dataset: Path) -> None:
    cfg = _cfg(dataset, num_workers=1, augmentation={"noise": {"p": 1.0}})
    first = [next(iter(build_loaders(cfg, batch_size=2, seed=3)[0])) for _ in range(2)]
    assert torch.equal(first[0]["image"], first[1]["image"])


def _break_manifest(folder: Path) -> None:
    pd.DataFrame({"id": ["a"], "image": ["images/a.nii.gz"]}).to_csv(
        folder / "manifest.csv", index=False
    )


def _repeat_id(folder: Path) -> None:
    manifest = pd.read_csv(folder / "manifest.csv")
    pd.concat([manifest, manifest.iloc[:1]]).to_csv(folder / "manifest.csv", index=False)


@pytest.mark.parametrize(
    ("damage", "rule", "culprit"),
    [
        (lambda f: (f / "manifest.csv").unlink(), "missing-file", "manifest.csv"),
        (lambda f: (f / "dataset.json").write_text("{}"), "dataset-info", "dataset.json"),
        (_break_manifest, "manifest-columns", "manifest.csv"),
        (_repeat_id, "manifest-unique-id", "manifest.csv"),
        (lambda f: (f / "images" / "b.nii.gz").unlink(), "missing-file", "b.nii.gz"),
        (lambda f: _write_splits(f / "splits.json", [(["a"], ["x"])]), "unknown-id", "splits.json"),
        (
            lambda f: _write_splits(f / "splits.json", [(["a", "b"], ["b"])]),
            "split-overlap",
            "splits.json",
        ),
        (lambda f: _write_splits(f / "splits.json", [(["a"], [])]), "empty-split", "splits.json"),
        (lambda f: (f / "splits.json").write_text("[1, 2]"), "splits-format", "splits.json"),
        (lambda f: (f / "splits.json").unlink(), "missing-file", "splits.json"),
    ],
)
def test_inconsistent_datasets_fail_naming_the_file_and_rule(
    dataset: Path, damage: Any, rule: str, culprit: str
) -> None:
    damage(dataset)
    with pytest.raises(DataError) as exc:
        build_datasets(_cfg(dataset))
    assert exc.value.rule == rule
    assert exc.value.path is not None
    assert exc.value.path.name == culprit


def test_splits_of_another_dataset_version_warn_but_work(dataset: Path) -> None:
    _write_splits(dataset / "splits.json", [(["a"], ["b"])], "0.9")
    with pytest.warns(UserWarning, match="dataset version"):
        train, val = build_datasets(_cfg(dataset))
    assert (len(train), len(val)) == (1, 1)


def test_a_fold_beyond_the_splits_is_refused(dataset: Path) -> None:
    with pytest.raises(DataError, match=r"no fold 2; folds are \[0, 1\]") as exc:
        build_datasets(_cfg(dataset, fold=2))
    assert exc.value.rule == "fold-range"


def test_batch_size_must_be_positive(dataset: Path) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        build_loaders(_cfg(dataset), batch_size=0, seed=0)


@pytest.fixture(scope="module")
def vesselnn_prepared(vesselnn_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The six real VesselNN volumes converted into a prepared dataset (labels made {0, 1})."""
    volumes, spacing = {}, {}
    for tif in sorted((vesselnn_dir / "denoised").glob("*_BM4D_denoised.tif")):
        name = tif.name.removesuffix("_BM4D_denoised.tif")
        label_path = next((vesselnn_dir / "labels").glob(f"{name}_*.tif"))
        metadata = vesselnn_dir / "metadata" / f"{name}_metadata.xml.txt"
        found = parse_ome_spacing(metadata.read_bytes()) if metadata.is_file() else None
        image = read_tiff(tif, spacing=found or (0.621, 0.621, 5.0))
        volumes[name] = (image.array, (read_tiff(label_path).array > 0).astype(np.uint8))
        spacing[name] = image.spacing
    folder = _prepare(tmp_path_factory.mktemp("vesselnn"), volumes, spacing)
    names = sorted(volumes)
    _write_splits(folder / "splits.json", [(names[:4], names[4:])])
    return folder


@pytest.mark.slow
def test_real_vesselnn_volumes_give_vessel_centred_patches(vesselnn_prepared: Path) -> None:
    cfg = _cfg(
        vesselnn_prepared,
        patch_size=(64, 64, 16),
        samples_per_volume=4,
        pos_neg_ratio=(1.0, 1.0),
        augmentation={"affine": {"p": 1.0}},
    )
    train, val = build_loaders(cfg, batch_size=2, seed=0)
    batches = _epoch(train)
    images = torch.cat([b["image"] for b in batches])
    labels = torch.cat([b["label"] for b in batches])
    assert images.shape == (16, 1, 64, 64, 16)
    assert set(torch.unique(labels).tolist()) == {0, 1}
    centres = labels[:, 0, 32, 32, 8].float()
    assert 0.25 <= float(centres.mean()) <= 0.9
    vessel = float(images[labels == 1].mean())
    background = float(images[labels == 0].mean())
    assert vessel > background
    for item in _epoch(val):
        assert item["image"].shape[:2] == (1, 1)
        assert 0.0 == float(item["image"].min()) < float(item["image"].max()) == 1.0
