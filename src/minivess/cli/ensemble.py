"""``minivess ensemble``: combine trained models into one model (ensemble or greedy soup)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from minivess.cli.console import console

if TYPE_CHECKING:
    from minivess.adapters import CheckpointInfo, ModelAdapter
    from minivess.uncertainty.data import ScoredVolume

ensemble_app = typer.Typer(
    help="Combine trained models: `build` an ensemble (mean, vote, weighted) or `soup` weights.",
    no_args_is_help=True,
)

_MODELS = typer.Argument(..., help="Two or more checkpoints, model folders or MLflow URIs.")
_OUT = typer.Option(..., "--out", "-o", help="Checkpoint to write (.pt).")
_DATA = typer.Option(None, "--data", "-d", help="Prepared dataset with validation volumes.")
_FOLD = typer.Option(None, "--fold", min=0, help="Fold whose val volumes score the members.")
_LOG = typer.Option(False, "--log", help="Log the model and its card to a new MLflow run.")
_REGISTER = typer.Option(None, "--register", help="Also register it under this name.")
_DEVICE = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N.")


def _validation(
    members: list[tuple[ModelAdapter, CheckpointInfo]],
    data: Path | None,
    fold: int | None,
    device: str,
) -> list[list[ScoredVolume]]:
    """Each member's P(vessel) on the fold's validation volumes."""
    from minivess.errors import ConfigError
    from minivess.inference import PredictionSettings, Predictor
    from minivess.uncertainty.data import scored_volumes

    if data is None or fold is None:
        raise ConfigError("scoring members needs validation volumes: pass --data and --fold")
    scored = []
    for adapter, info in members:
        predictor = Predictor(adapter, PredictionSettings.from_checkpoint(info), device=device)
        scored.append(scored_volumes(predictor, data, fold=fold))
    return scored


def _dice(volumes: list[ScoredVolume]) -> float:
    """Mean over volumes of the Dice of ``P(vessel) > 0.5``."""
    import numpy as np

    values = []
    for v in volumes:
        pred = v.prob > 0.5
        denominator = pred.sum() + v.label.sum()
        values.append(2 * (pred & v.label).sum() / denominator if denominator else 1.0)
    return float(np.mean(values))


def _finish(out: Path, log: bool, register: str | None, metrics: dict[str, float]) -> None:
    """Write the model card beside the checkpoint; log both if asked."""
    from minivess.tracking.model_card import write_model_card

    card = write_model_card(out, out.with_suffix(".md"), name=register or out.stem)
    console.print(f"[green]wrote[/] {out} and its model card {card}", highlight=False)
    if log or register:
        from minivess.tracking.outputs import log_outputs

        logged = log_outputs(
            f"ensemble-{out.stem}",
            metrics=metrics,
            checkpoint=out,
            model_card=card,
            register=register,
            tags={"minivess_step": "ensemble"},
        )
        version = f", registered {register} v{logged.registered_version}" if register else ""
        console.print(f"logged to MLflow run {logged.run_id}{version}", highlight=False)


@ensemble_app.command("build")
def build(
    models: list[str] = _MODELS,
    out: Path = _OUT,
    combine: str = typer.Option("mean", "--combine", help="mean, weighted or vote."),
    weights: str = typer.Option(
        None, "--weights", help="Comma-separated member weights for --combine weighted."
    ),
    weights_from: str = typer.Option(
        None,
        "--weights-from",
        help="Derive weights on --data/--fold: 'dice' (proportional to validation Dice) or "
        "'fit' (minimise validation log-loss).",
    ),
    data: Path = _DATA,
    fold: int = _FOLD,
    log: bool = _LOG,
    register: str = _REGISTER,
    device: str = _DEVICE,
) -> None:
    """Build one ensemble checkpoint from trained models (servable like any model)."""
    import numpy as np

    from minivess.ensemble import (
        COMBINES,
        build_ensemble,
        fit_weights,
        load_members,
        save_ensemble,
        weights_from_scores,
    )
    from minivess.errors import ConfigError

    if combine not in COMBINES:
        raise ConfigError(f"--combine must be one of {', '.join(COMBINES)}; got {combine!r}")
    members = load_members(models)
    metrics: dict[str, float] = {}
    chosen: list[float] | None = None
    if weights is not None:
        chosen = [float(w) for w in weights.split(",")]
    elif weights_from is not None:
        scored = _validation(members, data, fold, device)
        scores = [_dice(s) for s in scored]
        metrics.update({f"member{i}_val_dice": s for i, s in enumerate(scores)})
        if weights_from == "dice":
            chosen = weights_from_scores(scores)
        elif weights_from == "fit":
            label = np.concatenate([v.label.ravel() for v in scored[0]])
            probs = [np.concatenate([v.prob.ravel() for v in s]) for s in scored]
            chosen = fit_weights(probs, label)
        else:
            raise ConfigError(f"--weights-from must be dice or fit; got {weights_from!r}")
    if chosen is not None and combine != "weighted":
        raise ConfigError("weights need --combine weighted")
    ensemble, extra = build_ensemble(models, combine=combine, weights=chosen, members=members)  # type: ignore[arg-type]
    save_ensemble(ensemble, extra, out)
    metrics.update({f"weight{i}": w for i, w in enumerate(chosen or [])})
    _finish(out, log, register, metrics)


@ensemble_app.command("soup")
def soup(
    models: list[str] = _MODELS,
    out: Path = _OUT,
    data: Path = _DATA,
    fold: int = _FOLD,
    log: bool = _LOG,
    register: str = _REGISTER,
    device: str = _DEVICE,
) -> None:
    """Greedy model soup (Wortsman et al. 2022) of same-architecture checkpoints."""
    from minivess.ensemble import greedy_soup, load_members
    from minivess.inference.settings import PredictionSettings

    members = load_members(models)
    settings = PredictionSettings.from_checkpoint(members[0][1])

    def score(adapter: ModelAdapter) -> float:
        return _dice(_validation([(adapter, members[0][1])], data, fold, device)[0])

    result = greedy_soup(members, score)
    first = members[result.ingredients[0]][1]
    extra = {
        **settings.to_extra(),
        "soup": {
            "ingredients": [str(models[i]) for i in result.ingredients],
            "scores": list(result.scores),
            "soup_val_dice": result.soup_score,
        },
    }
    result.soup.save_checkpoint(out, data_version=first.data_version, extra=extra)
    console.print(
        f"soup of {len(result.ingredients)}/{len(models)} models, val Dice "
        f"{result.soup_score:.4f} (members: {', '.join(f'{s:.4f}' for s in result.scores)})",
        highlight=False,
    )
    _finish(out, log, register, {"soup_val_dice": result.soup_score})
