"""``minivess drift``: are the current volumes distributed like the reference volumes?"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from minivess.cli.console import console

if TYPE_CHECKING:
    import pandas as pd

    from minivess.inference import Predictor


def features_of(source: Path, predictor: Predictor | None, tile: int) -> pd.DataFrame:
    """The feature table of a CSV table, a prepared dataset (its images) or a folder of volumes.

    Raises:
        DataError: Missing path, an unreadable volume, or no volume found.
    """
    from minivess.data.io import NIFTI_SUFFIXES, TIFF_SUFFIXES, read_volume
    from minivess.drift import feature_table, read_feature_table, volume_features
    from minivess.errors import DataError

    if not source.exists():
        raise DataError(source, "missing-file", "does not exist")
    if source.is_file() and source.suffix == ".csv":
        return read_feature_table(source)
    folder = source / "images" if (source / "manifest.csv").is_file() else source
    suffixes = sorted((*NIFTI_SUFFIXES, *TIFF_SUFFIXES), key=len, reverse=True)

    def stem(path: Path) -> str:
        name = path.name
        return next((name[: -len(s)] for s in suffixes if name.lower().endswith(s)), "")

    visible = [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.is_dir() else []
    paths = sorted(p for p in visible if stem(p)) if folder.is_dir() else [folder]
    if not paths:
        raise DataError(folder, "no-volumes", "no NIfTI or TIFF volume in this folder")

    def frame(path: Path) -> pd.DataFrame:
        volume = read_volume(path)
        prob = None
        if predictor is not None:  # torch is imported only when a model is asked for
            prob = predictor.probabilities(volume)[1].numpy()
        return volume_features(volume, volume_id=stem(path), prob=prob, tile=tile)

    return feature_table(frame(path) for path in paths)


def drift(
    reference: Path = typer.Option(
        ..., "--reference", "-r", help="Reference volumes: a folder, a prepared dataset or a CSV."
    ),
    current: Path = typer.Option(
        ..., "--current", "-c", help="Volumes to check: a folder, a prepared dataset or a CSV."
    ),
    out: Path = typer.Option(Path("drift"), "--out", "-o", help="Output folder."),
    model: str = typer.Option(
        None, "--model", "-m", help="Also compare predicted vessel fraction and uncertainty."
    ),
    tile: int = typer.Option(128, "--tile", min=8, help="Crop side (voxels) of a feature row."),
    threshold: float = typer.Option(0.05, "--threshold", help="Per-feature KS p-value."),
    drift_share: float = typer.Option(
        0.5, "--drift-share", help="Share of drifted features that means the data drifted."
    ),
    log: bool = typer.Option(False, "--log", help="Log report, verdict and tables to MLflow."),
    run_id: str = typer.Option(None, "--run-id", help="Log into this MLflow run (implies --log)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N (with --model)."),
) -> None:
    """Evidently drift report (HTML), verdict and per-feature p-values (JSON) over crops.

    Exits with code 1 when the data drifted, so scripts and CI can act on it.
    """
    from minivess.data.io import atomic_path
    from minivess.drift import detect_drift

    predictor = None
    if model is not None:
        import minivess.ensemble  # noqa: F401  (an ensemble checkpoint needs its adapter)
        from minivess.inference import Predictor

        predictor = Predictor.from_source(model, device=device)
    ref = features_of(reference, predictor, tile)
    cur = features_of(current, predictor, tile)
    result = detect_drift(ref, cur, out_dir=out, threshold=threshold, drift_share=drift_share)
    tables = []
    for name, table in (("reference", ref), ("current", cur)):
        path = out / f"features_{name}.csv"
        with atomic_path(path) as tmp:
            table.to_csv(tmp, index=False, lineterminator="\n")
        tables.append(path)
    for feature, p in result.p_values.items():
        mark = "[red]drift[/]" if p < threshold else "ok"
        console.print(f"{feature:>22}  p={p:.3g}  {mark}", highlight=False)
    verdict = "[bold red]DRIFT[/]" if result.drifted else "[bold green]no drift[/]"
    console.print(
        f"{verdict}: {len(result.drifted_features)}/{len(result.p_values)} features drifted "
        f"({result.n_reference} reference vs {result.n_current} current crops); report "
        f"{result.files[0]}",
        highlight=False,
    )
    if log or run_id:
        from minivess.tracking.outputs import log_outputs

        logged = log_outputs(
            f"drift-{current.name}",
            metrics=result.metrics(),
            files=[*result.files, *tables],
            artifact_dir="drift",
            tags={"minivess_step": "drift", "drift_detected": str(result.drifted).lower()},
            run_id=run_id,
        )
        console.print(f"logged to MLflow run {logged.run_id}", highlight=False)
    if result.drifted:
        raise typer.Exit(1)
