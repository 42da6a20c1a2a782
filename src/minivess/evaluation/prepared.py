"""Evaluate a model on a prepared dataset, on the volumes of one fold or on all of them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal, get_args

import pandas as pd

from minivess.data.datasets import read_dataset_version
from minivess.data.io import read_volume
from minivess.data.manifest import read_manifest
from minivess.data.splits import load_splits
from minivess.errors import ConfigError
from minivess.evaluation.bootstrap import N_BOOT
from minivess.evaluation.evaluate import Case, EvaluationResult, Progress, evaluate
from minivess.inference import Predictor

Subset = Literal["val", "train", "all"]
"""Which volumes of a prepared dataset to evaluate: a fold's held-out or training volumes, or
every volume."""
SUBSETS: tuple[str, ...] = get_args(Subset)
SPLITS_FILE = "splits.json"
"""Splits file ``minivess data prepare`` writes into the dataset folder by default."""


def select_ids(
    dataset_dir: Path,
    manifest: pd.DataFrame,
    *,
    splits_file: Path | None,
    fold: int | None,
    subset: str,
) -> list[str]:
    """The volume ids to evaluate, in manifest or splits order.

    Raises:
        ConfigError: Unknown subset, a fold with ``subset="all"``, no fold for ``val``/``train``,
            or a fold the splits do not have.
        DataError: The splits file is missing, malformed, or names ids the dataset lacks.
    """
    if subset not in SUBSETS:
        raise ConfigError(f"subset must be one of {', '.join(SUBSETS)}; got {subset!r}")
    if subset == "all":
        if fold is not None:
            raise ConfigError("a fold selects val or train volumes; drop it for subset 'all'")
        return [str(i) for i in manifest["id"]]
    if fold is None:
        raise ConfigError(
            f"subset {subset!r} needs the fold the model was trained on (--fold N); "
            "use subset 'all' to evaluate every volume"
        )
    splits = load_splits(splits_file or dataset_dir / SPLITS_FILE, manifest)
    if not 0 <= fold < splits.k:
        raise ConfigError(f"fold {fold} does not exist: the splits have folds 0..{splits.k - 1}")
    chosen = splits.folds[fold]
    return list(chosen.val if subset == "val" else chosen.train)


def prepared_cases(dataset_dir: Path, manifest: pd.DataFrame, ids: list[str]) -> Iterator[Case]:
    """``(id, image, label)`` of each id, read lazily from the dataset's NIfTI files.

    Raises:
        DataError: A file is missing or unreadable (raised when its case is reached).
    """
    rows = manifest.set_index("id")
    for case_id in ids:
        image = read_volume(dataset_dir / str(rows.at[case_id, "image"]))
        label = read_volume(dataset_dir / str(rows.at[case_id, "label"]))
        yield case_id, image, label


def evaluate_prepared(
    model_source: str | Path | Predictor,
    dataset_dir: str | Path,
    *,
    splits_file: str | Path | None = None,
    fold: int | None = None,
    subset: Subset = "val",
    device: str = "cpu",
    n_boot: int = N_BOOT,
    progress: Progress | None = None,
) -> EvaluationResult:
    """Evaluate a model on (part of) a prepared dataset.

    Args:
        model_source: A :class:`Predictor`, or anything :meth:`Predictor.from_source` loads
            (checkpoint, model folder, ``models:/`` or ``runs:/`` URI).
        dataset_dir: Folder written by ``minivess data prepare`` (``manifest.csv``,
            ``dataset.json``, ``images/``, ``labels/``).
        splits_file: Splits JSON; defaults to ``<dataset_dir>/splits.json``.
        fold: Fold whose volumes to evaluate (required for ``val`` and ``train``).
        subset: ``"val"`` (the fold's held-out volumes), ``"train"`` or ``"all"``.
        device: Where the network runs when loading ``model_source``.
        n_boot: Bootstrap resamples for the intervals.
        progress: Called as ``progress(done, case_id)`` after each volume.

    Returns:
        The evaluation, with ``data`` recording the dataset, its version, subset and fold.

    Raises:
        ConfigError: Invalid subset/fold combination.
        DataError: Not a prepared dataset, bad splits, unreadable volumes.
        CheckpointError: The model source is not a usable checkpoint.

    Example:
        >>> result = evaluate_prepared("best.pt", "data/prepared/vn", fold=0)  # doctest: +SKIP
        >>> result.save("evaluation/vesselnn-fold0")  # doctest: +SKIP
    """
    dataset = Path(dataset_dir)
    manifest = read_manifest(dataset / "manifest.csv")
    version = read_dataset_version(dataset)
    splits = Path(splits_file) if splits_file is not None else None
    ids = select_ids(dataset, manifest, splits_file=splits, fold=fold, subset=subset)
    predictor = (
        model_source
        if isinstance(model_source, Predictor)
        else Predictor.from_source(model_source, device=device)
    )
    result = evaluate(
        predictor, prepared_cases(dataset, manifest, ids), n_boot=n_boot, progress=progress
    )
    result.data = {
        "dataset_dir": str(dataset),
        "dataset_version": version,
        "subset": subset,
        "fold": fold,
        "splits_file": str(splits or dataset / SPLITS_FILE) if subset != "all" else None,
    }
    return result
