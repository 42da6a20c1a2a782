"""A Markdown model card generated from what a checkpoint and its evaluation record.

Every number comes from the checkpoint (adapter, config, data version, code version, stored
calibration and conformal results) or from an evaluation ``summary.json``; nothing is typed in
by hand, so the card cannot drift from the model it describes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from minivess.adapters import CheckpointInfo
from minivess.data.io import atomic_path

CARD_FILE = "model_card.md"

INTENDED_USE = (
    "Voxel-wise segmentation of blood vessels in 3D two-photon microscopy stacks of rodent "
    "brain (and tumour) vasculature, acquired like the training data: fluorescent vessel "
    "lumen, 8/16-bit intensities, in-plane voxels of ~0.5-2 um, Z steps of ~1-5 um. Research "
    "use; a person reviews the masks before quantitative analysis."
)
LIMITATIONS = (
    "- Trained on few volumes from one lab and microscope family; performance on other "
    "microscopes, stains, species or pathologies is unmeasured: run `minivess drift` first.",
    "- Labels of some training volumes are noisy (e.g. under-segmented); thin capillaries and "
    "vessel walls along Z (strong anisotropy) are the usual errors.",
    "- Calibration and conformal guarantees hold only for data exchangeable with their "
    "calibration set; under drift they no longer hold.",
    "- The conformal FNR bound is on the *expected* FNR over new crops/volumes; any single one "
    "can exceed it.",
)


def _number(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _metrics_section(summary: Mapping[str, Any] | None) -> list[str]:
    if not summary:
        return ["No evaluation was attached (run `minivess evaluate` and pass its summary.json)."]
    metrics = summary.get("metrics", {})
    confidence = round(100 * float(summary.get("settings", {}).get("confidence", 0.95)))
    lines = [
        f"Evaluated on {summary.get('n_volumes', '?')} volume(s) "
        f"({summary.get('data', {}).get('subset', '?')} subset, fold "
        f"{summary.get('data', {}).get('fold', '-')}); mean with {confidence}% bootstrap CI.",
        "",
        "| metric | mean | CI low | CI high | n |",
        "|---|---|---|---|---|",
    ]
    for name, stats in metrics.items():
        cells = [_number(stats.get(k)) for k in ("mean", "ci_low", "ci_high", "n")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _uncertainty_section(extra: Mapping[str, Any]) -> list[str]:
    stored = extra.get("uncertainty") or {}
    report = stored.get("report") or {}
    lines: list[str] = []
    calibration = stored.get("calibration")
    if calibration:
        from minivess.uncertainty.calibration import calibration_from_dict

        lines.append(
            f"**Calibration**: {calibration_from_dict(calibration).describe()}, "
            f"fitted on {calibration.get('n_voxels', '?')} {calibration.get('sampling', '')} "
            "voxels."
        )
        before, after = report.get("calibration_before"), report.get("calibration_after")
        if before and after:
            lines += ["", "| held-out crops | ECE | adaptive ECE | class-balanced ECE | Brier |"]
            lines.append("|---|---|---|---|---|")
            for name, r in (("before", before), ("after", after)):
                cells = [
                    _number(r[k]) for k in ("ece", "adaptive_ece", "class_balanced_ece", "brier")
                ]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
    else:
        lines.append("**Calibration**: none (raw softmax probabilities).")
    control = stored.get("fnr_control")
    lines.append("")
    if control:
        lines.append(
            f"**Conformal FNR control**: voxels with P(vessel) > {control['threshold']:.3f} are "
            f"vessel; expected false-negative rate <= {control['alpha']} on new crops "
            f"exchangeable with the {control['n_calibration']} calibration crops from "
            f"{', '.join(control.get('calibration_ids', [])) or '?'}."
        )
        if "conformal_heldout_fnr" in report:
            lines.append(
                f"Measured on {report.get('conformal_heldout_crops')} held-out crops: mean FNR "
                f"{report['conformal_heldout_fnr']:.4f}, predicted vessel volume x"
                f"{report.get('conformal_volume_inflation', float('nan')):.2f} of the argmax mask."
            )
    else:
        lines.append("**Conformal FNR control**: not fitted.")
    sets = stored.get("prediction_sets")
    if sets:
        lines += [
            "",
            f"**Prediction sets** (alpha {sets['alpha']}): vessel if P >= "
            f"{sets['vessel_from']:.3f}, background if P <= {sets['background_to']:.3f}, "
            "otherwise uncertain.",
        ]
        if "sets_heldout_coverage" in report:
            lines.append(
                f"Held-out coverage {report['sets_heldout_coverage']:.4f}, uncertain voxels "
                f"{report.get('sets_heldout_uncertain_fraction', float('nan')):.4f}."
            )
    return lines


def model_card(
    info: CheckpointInfo, *, name: str = "", evaluation: Mapping[str, Any] | None = None
) -> str:
    """The Markdown card of a checkpoint (and, if given, its evaluation summary)."""
    config = info.config
    members = config.get("members") if info.adapter == "ensemble" else None
    lines = [
        f"# Model card: {name or info.adapter}",
        "",
        "## Model",
        f"- adapter: `{info.adapter}`",
        f"- created: {info.created_at or '?'}",
        f"- code: minivess {info.code_version.get('minivess')}, commit "
        f"{info.code_version.get('git_commit')}, torch {info.code_version.get('torch')}, "
        f"monai {info.code_version.get('monai')}",
    ]
    if members:
        lines.append(f"- ensemble of {len(members)} ({config.get('combine')}):")
        lines += [f"  - `{m['adapter']}` from {m.get('name') or '?'}" for m in members]
    else:
        lines.append(f"- config: `{json.dumps(config, sort_keys=True)}`")
    lines += [
        "",
        "## Training data",
        f"- data version (hash of the prepared dataset's manifest): `{info.data_version}`",
    ]
    experiment = info.extra.get("experiment")
    if isinstance(experiment, str):
        try:
            data = json.loads(experiment).get("data", {})
            lines.append(f"- dataset: `{data.get('dataset_dir')}`, fold {data.get('fold')}")
        except ValueError:
            pass
    lines += ["", "## Metrics", *_metrics_section(evaluation)]
    lines += ["", "## Uncertainty", *_uncertainty_section(info.extra)]
    lines += ["", "## Intended use", INTENDED_USE, "", "## Known limitations", *LIMITATIONS]
    return "\n".join(lines) + "\n"


def write_model_card(
    checkpoint: str | Path,
    target: str | Path,
    *,
    name: str = "",
    evaluation_summary: str | Path | None = None,
) -> Path:
    """Write the card of ``checkpoint`` to ``target`` atomically.

    Raises:
        CheckpointError: Not a readable checkpoint.
        DataError: The evaluation summary is not readable JSON.
    """
    from minivess.adapters import load_checkpoint
    from minivess.errors import DataError

    _, info = load_checkpoint(checkpoint)
    summary = None
    if evaluation_summary is not None:
        try:
            summary = json.loads(Path(evaluation_summary).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(
                evaluation_summary, "unreadable", f"not a summary.json: {exc}"
            ) from None
    target = Path(target)
    with atomic_path(target) as tmp:
        tmp.write_text(model_card(info, name=name, evaluation=summary), encoding="utf-8")
    return target
