"""Log the outputs of a post-training step (ensemble, calibration, conformal, drift) to MLflow."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from minivess.tracking.model import log_model
from minivess.tracking.run import TrackedRun


@dataclass(frozen=True)
class Logged:
    """Where the outputs went: the run, and the logged and registered model if any."""

    run_id: str
    model_uri: str | None = None
    registered_version: str | None = None


def log_outputs(
    run_name: str,
    *,
    metrics: Mapping[str, float],
    files: Sequence[Path] = (),
    artifact_dir: str | None = None,
    tags: Mapping[str, str] | None = None,
    checkpoint: Path | None = None,
    model_card: Path | None = None,
    register: str | None = None,
    run_id: str | None = None,
    dataset_dir: Path | None = None,
) -> Logged:
    """Log metrics, files and optionally a model (with its card) into one MLflow run.

    Args:
        run_name: Name of the new run (ignored when ``run_id`` is given).
        metrics: Numbers to log at step 0.
        files: Files to upload (reports, figures, tables).
        artifact_dir: Folder of the run's artifacts to put ``files`` in.
        tags: Tags of the run.
        checkpoint: A minivess checkpoint to log as the run's model.
        model_card: The model's Markdown card, logged with it and set as the description of
            the registered version.
        register: Register the model under this name (aliases untouched).
        run_id: Log into this existing run instead of a new one.
        dataset_dir: A prepared dataset to record as the run's input.

    Raises:
        MinivessError: Unreachable tracking store or unknown ``run_id``.
    """
    with TrackedRun(
        run_name=run_name,
        resume_run_id=run_id,
        tags=tags,
        dataset_dir=dataset_dir,
        log_system_metrics=False,
    ) as run:
        run.log_metrics(dict(metrics), step=0)
        for path in files:
            run.log_artifact(path, artifact_dir)
        if checkpoint is None:
            return Logged(run.run_id)
        info = log_model(checkpoint, registered_model_name=register, model_card=model_card)
        version = info.registered_model_version
        if register and version is not None and model_card is not None:
            from minivess.tracking.setup import import_mlflow

            client = import_mlflow().MlflowClient()
            description = Path(model_card).read_text(encoding="utf-8")
            client.update_model_version(register, str(version), description=description)
        return Logged(run.run_id, info.model_uri, str(version) if version is not None else None)
