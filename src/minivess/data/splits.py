"""Deterministic k-fold cross-validation splits by volume, stored as small JSON files.

A split file is part of an experiment's definition, so it must not depend on the order files
were listed in, the machine, or the numpy version. Each id's fold is fixed by ranking the ids
by ``sha256("<seed>:<id>")`` and dealing them round-robin into ``k`` folds: the same ids, seed
and ``k`` always give the same file, with fold sizes differing by at most one.

File format::

    {"name": "vesselnn", "seed": 42, "k": 3, "dataset_version": "<sha256>",
     "folds": [{"fold": 0, "train": [ids], "val": [ids]}, ...]}
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from minivess.data.io import atomic_path
from minivess.data.manifest import read_manifest
from minivess.errors import ConfigError, DataError


@dataclass(frozen=True)
class Fold:
    """One fold: the volumes to train on and the held-back volumes to validate on."""

    fold: int
    train: tuple[str, ...]
    val: tuple[str, ...]


@dataclass(frozen=True)
class Splits:
    """k folds over a set of volume ids; every id is in exactly one ``val`` list.

    Args:
        name: Dataset name the splits belong to.
        seed: Seed that fixed the assignment.
        k: Number of folds.
        dataset_version: Version (content hash) of the prepared dataset, or ``""`` if unknown.
        folds: The folds, ordered by index.
    """

    name: str
    seed: int
    k: int
    dataset_version: str
    folds: tuple[Fold, ...]

    @property
    def ids(self) -> list[str]:
        """Every volume id, sorted."""
        return sorted(i for fold in self.folds for i in fold.val)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (see the module docstring)."""
        return {
            "name": self.name,
            "seed": self.seed,
            "k": self.k,
            "dataset_version": self.dataset_version,
            "folds": [
                {"fold": f.fold, "train": list(f.train), "val": list(f.val)} for f in self.folds
            ],
        }


def _rank(seed: int, case_id: str) -> str:
    return hashlib.sha256(f"{seed}:{case_id}".encode()).hexdigest()


def make_splits(
    ids: Iterable[str], k: int, seed: int, name: str, *, dataset_version: str = ""
) -> Splits:
    """Assign volumes to ``k`` folds, deterministically for a given set of ids and seed.

    Args:
        ids: Volume ids (any order; the result does not depend on it).
        k: Number of folds, from 2 to the number of ids.
        seed: Seed of the assignment.
        name: Dataset name recorded in the splits.
        dataset_version: Version of the prepared dataset the ids come from.

    Returns:
        The splits; fold sizes differ by at most one and id lists are sorted.

    Raises:
        DataError: An id appears twice.
        ConfigError: ``k`` is out of range.

    Example:
        >>> s = make_splits(["a", "b", "c", "d"], k=2, seed=0, name="demo")
        >>> sorted(len(f.val) for f in s.folds)
        [2, 2]
        >>> make_splits(["d", "c", "b", "a"], 2, 0, "demo") == s
        True
    """
    ids = list(ids)
    dupes = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dupes:
        raise DataError(None, "duplicate-id", f"ids must be unique; repeated: {dupes}")
    if not 2 <= k <= len(ids):
        raise ConfigError(f"k must be between 2 and the number of volumes ({len(ids)}), got {k}")
    ranked = sorted(ids, key=lambda i: _rank(seed, i))
    folds = []
    for index in range(k):
        val = sorted(ranked[index::k])
        train = sorted(set(ids) - set(val))
        folds.append(Fold(index, tuple(train), tuple(val)))
    return Splits(name, int(seed), int(k), dataset_version, tuple(folds))


def splits_for_prepared(prepared: str | Path, *, k: int, seed: int) -> Splits:
    """k-fold splits of every volume of a prepared dataset, stamped with its name and version.

    This is how ``configs/splits/<name>.json`` is made: ``prepare`` the data, then
    ``save_splits(splits_for_prepared(out, k=3, seed=42), "configs/splits/vesselnn.json")``.

    Args:
        prepared: Folder written by :func:`minivess.data.prepare.prepare_dataset`.
        k: Number of folds.
        seed: Seed of the assignment.

    Returns:
        Splits named after the dataset, recording its version.

    Raises:
        DataError: The folder is not a valid prepared dataset.
    """
    prepared = Path(prepared)
    manifest = read_manifest(prepared / "manifest.csv")
    info_path = prepared / "dataset.json"
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        name, version = str(info["name"]), str(info["version"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(info_path, "dataset-info", f"cannot read name and version ({exc})") from exc
    return make_splits(manifest["id"], k, seed, name, dataset_version=version)


def save_splits(splits: Splits, path: str | Path) -> Path:
    """Write splits as indented JSON (atomically; same splits give identical bytes)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(splits.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def _parse(data: Any, path: Path) -> Splits:
    """Build :class:`Splits` from parsed JSON, refusing anything not in the file format."""
    try:
        folds = tuple(
            Fold(int(f["fold"]), tuple(map(str, f["train"])), tuple(map(str, f["val"])))
            for f in data["folds"]
        )
        splits = Splits(
            str(data["name"]),
            int(data["seed"]),
            int(data["k"]),
            str(data["dataset_version"]),
            folds,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            path, "splits-format", f"not a splits file ({type(exc).__name__}: {exc})"
        ) from exc
    if [f.fold for f in folds] != list(range(splits.k)):
        raise DataError(path, "splits-format", f"expected folds numbered 0..{splits.k - 1}")
    return splits


def _check_partition(splits: Splits, path: Path) -> None:
    """Every id validates in exactly one fold and trains in all the others."""
    counts = Counter(i for fold in splits.folds for i in fold.val)
    repeated = sorted(i for i, n in counts.items() if n > 1)
    if repeated:
        raise DataError(path, "splits-partition", f"ids in more than one val fold: {repeated}")
    everyone = set(counts)
    for fold in splits.folds:
        if set(fold.train) != everyone - set(fold.val) or len(fold.train) != len(set(fold.train)):
            raise DataError(
                path,
                "splits-partition",
                f"fold {fold.fold}: train must be exactly the ids not in its val list",
            )


def load_splits(path: str | Path, manifest: pd.DataFrame | str | Path | None = None) -> Splits:
    """Read and check a splits file, optionally against the dataset it will be used with.

    Args:
        path: The JSON file.
        manifest: A manifest table or ``manifest.csv`` path; when given, every id in the
            splits must be a volume of that dataset.

    Returns:
        The splits.

    Raises:
        DataError: Missing or malformed file (``missing-file``, ``splits-format``), folds that
            do not partition the ids (``splits-partition``), or ids missing from the manifest
            (``unknown-id``).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(path, "missing-file", "splits file does not exist") from exc
    except (OSError, ValueError) as exc:
        raise DataError(path, "splits-format", f"not valid JSON ({exc})") from exc
    splits = _parse(data, path)
    _check_partition(splits, path)
    if manifest is not None:
        table = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
        unknown = sorted(set(splits.ids) - set(table["id"]))
        if unknown:
            raise DataError(
                path,
                "unknown-id",
                f"ids not in the dataset: {unknown}; regenerate the splits for this dataset",
            )
    return splits
