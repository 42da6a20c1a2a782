"""log_model: a checkpoint becomes a registered-ready MLflow model, or a clear error."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from minivess.adapters import ModelAdapter
from minivess.adapters.checkpoint import CheckpointError
from minivess.errors import MinivessError
from minivess.tracking import TrackedRun, log_model


def test_logged_model_carries_signature_requirements_and_provenance(
    tracking: str, checkpoint: Path
) -> None:
    import minivess

    with TrackedRun("exp", log_system_metrics=False) as run:
        info = log_model(checkpoint, registered_model_name="direct")
    assert info.run_id == run.run_id
    (spec,) = info.signature.inputs.inputs
    assert (str(spec.type), tuple(spec.shape)) == ("float32", (-1, 1, -1, -1, -1))
    assert info.metadata["adapter"] == "segresnet"
    requirements = Path(mlflow.pyfunc.get_model_dependencies(info.model_uri)).read_text()
    assert f"minivess=={minivess.__version__}" in requirements
    assert info.registered_model_version == 1
    assert mlflow.MlflowClient().get_model_version("direct", "1").run_id == run.run_id


def test_checkpoint_without_inference_settings_is_refused(
    tracking: str, tmp_path: Path, tiny_adapter: ModelAdapter
) -> None:
    bare = tiny_adapter.save_checkpoint(tmp_path / "bare.pt")
    with (
        TrackedRun("exp", log_system_metrics=False),
        pytest.raises(MinivessError, match="roi_size"),
    ):
        log_model(bare)


def test_not_a_checkpoint_is_named(tracking: str, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with TrackedRun("exp", log_system_metrics=False), pytest.raises(CheckpointError, match="junk"):
        log_model(junk)


def test_logging_needs_an_active_run(tracking: str, checkpoint: Path) -> None:
    with pytest.raises(MinivessError, match="active run"):
        log_model(checkpoint)
