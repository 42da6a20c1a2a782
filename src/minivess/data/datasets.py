"""Training and validation datasets and loaders for one cross-validation fold.

A prepared dataset folder holds ``images/<id>.nii.gz``, ``labels/<id>.nii.gz``, a
``manifest.csv`` (``id``, ``image``, ``label``; paths relative to the folder) and a
``dataset.json`` with its ``version``. A splits file lists, per fold, the training and validation
ids, and names the dataset version it was made for.

The deterministic part of the pipeline (decoding, normalisation, resampling, padding,
foreground indices; see :mod:`minivess.data.transforms`) is cached according to
``DataConfig.cache``; only random cropping and augmentation run every epoch.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset, list_data_collate
from monai.transforms import Compose
from torch.utils.data import DistributedSampler, Subset

from minivess.config.data import DataConfig
from minivess.data.transforms import IMAGE_KEY, LABEL_KEY, train_transforms, val_transforms
from minivess.errors import DataError

MANIFEST = "manifest.csv"
DATASET_INFO = "dataset.json"
#: Bump when the cached deterministic pipeline changes, so that stale disk caches are not reused.
_CACHE_FORMAT = 1


def read_dataset_version(dataset_dir: Path) -> str:
    """The ``version`` recorded in ``<dataset_dir>/dataset.json``.

    Raises:
        DataError: The file is missing, not JSON, or has no version.
    """
    path = Path(dataset_dir) / DATASET_INFO
    if not path.is_file():
        raise DataError(path, "missing-file", "not a prepared dataset (no dataset.json)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(path, "dataset-info", f"cannot read dataset.json ({exc})") from exc
    if not isinstance(info, dict) or "version" not in info:
        raise DataError(path, "dataset-info", 'dataset.json has no "version"')
    return str(info["version"])


def read_manifest(dataset_dir: Path) -> pd.DataFrame:
    """The manifest of a prepared dataset, indexed by id, with absolute ``image``/``label`` paths.

    Raises:
        DataError: The manifest is missing, lacks a column, or repeats an id.
    """
    dataset_dir = Path(dataset_dir)
    path = dataset_dir / MANIFEST
    if not path.is_file():
        raise DataError(path, "missing-file", "not a prepared dataset (no manifest.csv)")
    manifest = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"id", IMAGE_KEY, LABEL_KEY} - set(manifest.columns)
    if missing:
        raise DataError(path, "manifest-columns", f"missing column(s) {sorted(missing)}")
    repeated = manifest["id"][manifest["id"].duplicated()].tolist()
    if repeated:
        raise DataError(path, "manifest-unique-id", f"ids listed more than once: {repeated}")
    for column in (IMAGE_KEY, LABEL_KEY):
        manifest[column] = [str((dataset_dir / rel).resolve()) for rel in manifest[column]]
    return manifest.set_index("id")


def read_fold(splits_file: Path, fold: int, dataset_version: str) -> tuple[list[str], list[str]]:
    """Training and validation ids of one fold of a splits file.

    Args:
        splits_file: JSON ``{"dataset_version", "folds": [{"fold", "train", "val"}, ...]}``.
        fold: The fold to return.
        dataset_version: Version of the dataset the ids will be looked up in.

    Returns:
        ``(train_ids, val_ids)``.

    Raises:
        DataError: The file is missing or malformed, has no such fold, or the fold's train and
            validation ids overlap or are empty. A splits file made for another dataset version
            only warns.
    """
    path = Path(splits_file)
    if not path.is_file():
        raise DataError(path, "missing-file", "splits file does not exist")
    try:
        splits = json.loads(path.read_text(encoding="utf-8"))
        folds = {int(entry["fold"]): entry for entry in splits["folds"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(path, "splits-format", f"cannot read splits ({exc!r})") from exc
    made_for = str(splits.get("dataset_version") or "")
    if made_for and made_for != dataset_version:
        # Not an error: the version hashes the compressed files, which another zlib build may
        # write differently; the ids are still checked against the manifest.
        warnings.warn(
            f"{path}: splits were made for dataset version {made_for[:12]}, the dataset is "
            f"{dataset_version[:12]}; using them because every id is checked against the manifest",
            stacklevel=2,
        )
    if fold not in folds:
        raise DataError(path, "fold-range", f"no fold {fold}; folds are {sorted(folds)}")
    train, val = [str(i) for i in folds[fold]["train"]], [str(i) for i in folds[fold]["val"]]
    if not train or not val:
        raise DataError(path, "empty-split", f"fold {fold} has an empty train or val list")
    shared = sorted(set(train) & set(val))
    if shared:
        raise DataError(path, "split-overlap", f"fold {fold} trains and validates on {shared}")
    return train, val


def _items(manifest: pd.DataFrame, ids: list[str], splits_file: Path) -> list[dict[str, str]]:
    """Data dicts for ``ids``, checking that every id and file exists."""
    unknown = [i for i in ids if i not in manifest.index]
    if unknown:
        raise DataError(splits_file, "unknown-id", f"ids not in the dataset manifest: {unknown}")
    items = []
    for case_id in ids:
        item = {"id": case_id}
        for key in (IMAGE_KEY, LABEL_KEY):
            item[key] = str(manifest.at[case_id, key])
            if not Path(item[key]).is_file():
                raise DataError(item[key], "missing-file", f"{key} of {case_id!r} does not exist")
        items.append(item)
    return items


def fold_items(cfg: DataConfig) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """``{"id", "image", "label"}`` dicts of the training and validation volumes of the fold.

    Raises:
        DataError: The dataset or splits break a rule (see :func:`read_fold`).
    """
    version = read_dataset_version(cfg.dataset_dir)
    manifest = read_manifest(cfg.dataset_dir)
    train_ids, val_ids = read_fold(cfg.splits_file, cfg.fold, version)
    return _items(manifest, train_ids, cfg.splits_file), _items(manifest, val_ids, cfg.splits_file)


def _cache_subdir(cfg: DataConfig, part: str) -> Path:
    """A disk-cache folder specific to the dataset version and the cached settings.

    Cached files are keyed by item paths only, so anything else that changes their content
    (dataset version, percentiles, resampling, padding) must change the folder.
    """
    assert cfg.cache_dir is not None  # guaranteed by DataConfig for cache="disk"
    settings = {
        "format": _CACHE_FORMAT,
        "version": read_dataset_version(cfg.dataset_dir),
        "percentiles": cfg.intensity_percentiles,
        "patch_size": cfg.patch_size if part == "train" else None,
    }
    if part == "train" and cfg.target_spacing_um is not None:
        # Only when set: caches written before this setting existed stay valid.
        settings["target_spacing_um"] = cfg.target_spacing_um
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cfg.cache_dir) / f"{part}-{digest}"


def _dataset(cfg: DataConfig, items: list[dict[str, str]], transform: Compose, part: str) -> Any:
    if cfg.cache == "memory":
        # copy_cache=False: the random transforms never write into their input (crops are
        # indexed views that are copied on collation, TorchIO works on a copy), so copying
        # every cached volume and its index lists on each access would be wasted work.
        return CacheDataset(
            items, transform, num_workers=cfg.num_workers, progress=False, copy_cache=False
        )
    if cfg.cache == "disk":
        return PersistentDataset(
            items, transform, cache_dir=_cache_subdir(cfg, part), track_meta=True
        )
    return Dataset(items, transform)


def build_datasets(cfg: DataConfig) -> tuple[Dataset, Dataset]:
    """Training and validation datasets of ``cfg.fold``.

    Args:
        cfg: Data settings.

    Returns:
        ``(train, val)``. A training item is a list of ``samples_per_volume`` dicts with
        ``image`` (float32) and ``label`` (uint8) patches of shape ``(1, *patch_size)``; a
        validation item is one dict with the whole normalised volume ``(1, H, W, D)``.

    Raises:
        DataError: The dataset or splits are missing or inconsistent.
    """
    train_items, val_items = fold_items(cfg)
    deterministic, random_part = train_transforms(cfg)
    # One flat Compose: the caches stop at its first random transform.
    train = Compose([*deterministic.transforms, *random_part.transforms])
    return (
        _dataset(cfg, train_items, train, "train"),
        _dataset(cfg, val_items, val_transforms(cfg), "val"),
    )


def build_loaders(
    cfg: DataConfig, batch_size: int, seed: int, *, rank: int = 0, world_size: int = 1
) -> tuple[DataLoader, DataLoader]:
    """Training and validation loaders of ``cfg.fold``.

    Args:
        cfg: Data settings.
        batch_size: Volumes per training batch; a batch holds ``batch_size *
            samples_per_volume`` patches.
        seed: Seeds the shuffling and every random transform, in the main process and in each
            worker, so two loaders with the same seed yield the same batches.
        rank: This process's rank under ``torchrun`` (data-parallel training).
        world_size: Number of processes; above 1 each rank gets a disjoint shard of the
            training volumes (``DistributedSampler``) and of the validation volumes.

    Returns:
        ``(train, val)``; validation batches hold one whole volume each.

    Raises:
        DataError: The dataset or splits are missing or inconsistent.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    train_ds, val_ds = build_datasets(cfg)
    sampler: DistributedSampler[Any] | None = None
    val_part: Any = val_ds
    if world_size > 1:
        sampler = DistributedSampler(
            train_ds, num_replicas=world_size, rank=rank, shuffle=True, seed=seed
        )
        val_part = Subset(val_ds, list(range(rank, len(val_ds), world_size)))
    train = DataLoader(
        train_ds,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=cfg.num_workers,
        generator=torch.Generator().manual_seed(seed + rank),
        collate_fn=list_data_collate,
    )
    val = DataLoader(val_part, batch_size=1, shuffle=False, num_workers=cfg.num_workers)
    return train, val
