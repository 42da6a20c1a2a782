"""``minivess calibrate`` and ``minivess conformal``: fit uncertainty onto a trained model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from minivess.cli.console import console, progress_bar

if TYPE_CHECKING:
    from minivess.uncertainty.data import ScoredVolume

_MODEL = typer.Option(..., "--model", "-m", help="Checkpoint (.pt), model folder or MLflow URI.")
_DATA = typer.Option(..., "--data", "-d", help="Prepared dataset holding labelled volumes.")
_FOLD = typer.Option(None, "--fold", min=0, help="Fold whose val volumes calibrate the model.")
_SUBSET = typer.Option("val", "--subset", help="val (default), train or all.")
_OUT = typer.Option(..., "--out", "-o", help="Checkpoint to write, with the fit stored in it.")
_REPORT = typer.Option(None, "--report-dir", help="Folder for report files [default: <out>.d].")
_LOG = typer.Option(False, "--log", help="Log the model, card and report to a new MLflow run.")
_REGISTER = typer.Option(None, "--register", help="Also register the model under this name.")
_DEVICE = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N.")
_SEED = typer.Option(0, "--seed", help="Seed of the crop split and voxel sampling.")


def _scored(
    model: str, data: Path, fold: int | None, subset: str, device: str
) -> list[ScoredVolume]:
    import minivess.ensemble  # noqa: F401  (an ensemble checkpoint needs its adapter registered)
    from minivess.inference import Predictor
    from minivess.uncertainty.data import scored_volumes

    predictor = Predictor.from_source(model, device=device)
    with progress_bar("predict") as bar:
        task = bar.add_task("predict", total=None, item="")
        return scored_volumes(
            predictor,
            data,
            fold=fold,
            subset=subset,
            progress=lambda done, case: bar.update(task, completed=done, item=case),
        )


def _save(
    model: str, out: Path, report_dir: Path | None, head: Any, report: dict[str, Any]
) -> tuple[Path, list[Path]]:
    """Write the checkpoint, its model card and the report JSON; return the card and files."""
    from minivess.data.io import atomic_path
    from minivess.inference.sources import is_mlflow_uri, load_source
    from minivess.tracking.model_card import write_model_card
    from minivess.uncertainty.head import save_with_uncertainty

    source: str | Path = model
    if is_mlflow_uri(model):  # materialise the model so its checkpoint can be rewritten
        adapter, info = load_source(model)
        source = adapter.save_checkpoint(
            out.with_suffix(".source.pt"), data_version=info.data_version, extra=info.extra
        )
    save_with_uncertainty(source, out, head)
    folder = report_dir or out.with_suffix(".d")
    path = folder / "report.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    card = write_model_card(out, folder / "model_card.md", name=out.stem)
    return card, [path, card]


def _log(
    step: str,
    out: Path,
    card: Path,
    files: list[Path],
    metrics: dict[str, float],
    register: str | None,
) -> None:
    from minivess.tracking.outputs import log_outputs

    logged = log_outputs(
        f"{step}-{out.stem}",
        metrics=metrics,
        files=files,
        artifact_dir=step,
        checkpoint=out,
        model_card=card,
        register=register,
        tags={"minivess_step": step},
    )
    version = f", registered {register} v{logged.registered_version}" if register else ""
    console.print(f"logged to MLflow run {logged.run_id}{version}", highlight=False)


def calibrate(
    model: str = _MODEL,
    data: Path = _DATA,
    fold: int = _FOLD,
    subset: str = _SUBSET,
    out: Path = _OUT,
    method: str = typer.Option(
        "platt",
        "--method",
        help="platt (logit slope and intercept: also moves a bias) or temperature (slope only).",
    ),
    sampling: str = typer.Option(
        "prevalence",
        "--sampling",
        help="prevalence (voxels as they come) or balanced (vessel = background voxels; a "
        "Platt fit is then shifted back to the volumes' vessel prior).",
    ),
    report_dir: Path = _REPORT,
    log: bool = _LOG,
    register: str = _REGISTER,
    device: str = _DEVICE,
    seed: int = _SEED,
) -> None:
    """Fit Platt or temperature scaling on validation crops; report ECE on held-out crops.

    A conformal threshold or prediction sets already stored in the model are carried over to
    the new calibrated probability (they keep selecting the same voxels).
    """
    from minivess.errors import ConfigError
    from minivess.evaluation.figures import save_png
    from minivess.uncertainty.head import UncertaintyHead
    from minivess.uncertainty.workflow import METHODS
    from minivess.uncertainty.workflow import calibrate as fit

    if method not in METHODS:
        raise ConfigError(f"--method must be {' or '.join(METHODS)}; got {method!r}")
    if sampling not in ("balanced", "prevalence"):
        raise ConfigError(f"--sampling must be balanced or prevalence; got {sampling!r}")
    volumes = _scored(model, data, fold, subset, device)
    result = fit(volumes, method=method, sampling=sampling, seed=seed)  # type: ignore[arg-type]
    head = UncertaintyHead(calibration=result.calibration, report=result.report)
    card, files = _save(model, out, report_dir, head, result.report)
    files.append(save_png(result.figure, files[0].parent / "reliability.png"))
    before, after = result.report["calibration_before"], result.report["calibration_after"]
    for name in ("ece", "adaptive_ece", "class_balanced_ece", "brier"):
        console.print(f"{name:>20}: {before[name]:.4f} -> {after[name]:.4f}", highlight=False)
    console.print(
        f"[green]wrote[/] {out} ({result.calibration.describe()}) and "
        f"{len(files)} report files in {files[0].parent}",
        highlight=False,
    )
    if log or register:
        metrics = {f"{k}_before": before[k] for k in ("ece", "class_balanced_ece", "brier")}
        metrics |= {f"{k}_after": after[k] for k in ("ece", "class_balanced_ece", "brier")}
        stored = result.calibration.to_dict()
        metrics |= {f"calibration_{k}": stored[k] for k in ("scale", "bias") if k in stored}
        _log("calibrate", out, card, files, metrics, register)


def conformal(
    model: str = _MODEL,
    data: Path = _DATA,
    fold: int = _FOLD,
    subset: str = _SUBSET,
    out: Path = _OUT,
    alpha: float = typer.Option(0.1, "--alpha", help="Target expected false-negative rate."),
    set_alpha: float = typer.Option(
        None, "--set-alpha", help="Miscoverage of the per-voxel sets [default: --alpha]."
    ),
    validate: int = typer.Option(
        0, "--validate", min=0, help="Also run N random calibration/test splits (0: skip)."
    ),
    report_dir: Path = _REPORT,
    log: bool = _LOG,
    register: str = _REGISTER,
    device: str = _DEVICE,
    seed: int = _SEED,
) -> None:
    """Calibrate a conformal FNR threshold and per-voxel prediction sets on validation crops.

    A temperature already stored in the model is applied first; the fit is stored with it.
    """
    from minivess.inference.sources import load_source
    from minivess.uncertainty.head import UncertaintyHead
    from minivess.uncertainty.workflow import conformalize

    volumes = _scored(model, data, fold, subset, device)
    _, info = load_source(model)
    current = UncertaintyHead.from_extra(info.extra) or UncertaintyHead()
    result = conformalize(
        volumes, alpha=alpha, set_alpha=set_alpha, calibration=current.calibration, seed=seed
    )
    head = UncertaintyHead(
        fnr_control=result.fnr_control, prediction_sets=result.prediction_sets, report=result.report
    )
    card, files = _save(model, out, report_dir, head, result.report)
    if validate:
        files.append(_validate(volumes, current, validate, seed, files[0].parent))
    r = result.report
    console.print(
        f"threshold {r['conformal_threshold']:.3f} for alpha {alpha}: held-out FNR "
        f"{r['conformal_heldout_fnr']:.4f}, volume x{r['conformal_volume_inflation']:.2f}; "
        f"sets cover {r['sets_heldout_coverage']:.4f}, "
        f"{r['sets_heldout_uncertain_fraction']:.4f} uncertain",
        highlight=False,
    )
    console.print(f"[green]wrote[/] {out} and {len(files)} report files", highlight=False)
    if log or register:
        metrics = {k: float(v) for k, v in r.items() if isinstance(v, int | float)}
        _log("conformal", out, card, files, metrics, register)


def _validate(volumes: list[ScoredVolume], head: Any, splits: int, seed: int, folder: Path) -> Path:
    """Write the FNR guarantee table (repeated splits) as CSV and print it."""
    from minivess.data.io import atomic_path
    from minivess.uncertainty.data import crops_of
    from minivess.uncertainty.validation import Crop, fnr_guarantee_table

    crops = crops_of(volumes)
    if head.calibration is not None:
        crops = [Crop(head.calibration.apply(c.prob), c.label, c.source) for c in crops]
    table = fnr_guarantee_table(crops, n_splits=splits, seed=seed)
    path = folder / "fnr_guarantee.csv"
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")
    console.print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return path
