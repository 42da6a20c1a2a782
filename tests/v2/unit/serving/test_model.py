"""The served model: loaded from a checkpoint or a registry alias, named by its version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from minivess.config.settings import ServeSettings
from minivess.errors import MinivessError
from minivess.serving.model import load_served_model, resolve_registry_version


def test_checkpoint_source_loads_without_registry(checkpoint: Path) -> None:
    served = load_served_model(ServeSettings(model=str(checkpoint)))
    described = served.describe()
    assert described["source"] == str(checkpoint)
    assert (described["name"], described["version"]) == (None, None)
    assert (described["adapter"], described["backend"]) == ("segresnet", "torch")


@pytest.mark.slow
def test_exported_onnx_model_runs_on_onnx_runtime(onnx_model: Any) -> None:
    served = load_served_model(ServeSettings(model=str(onnx_model.onnx)))
    assert served.describe()["backend"] == "onnx"


def test_alias_resolves_to_the_version_it_names(tracking: str, checkpoint: Path) -> None:
    from minivess.tracking import TrackedRun, log_model, register_and_promote

    with TrackedRun("serving", log_system_metrics=False) as run:
        run.log_metrics({"val_dice": 0.5}, step=1)
        log_model(checkpoint)
    register_and_promote(run.run_id, "vessels", split_id="s1")

    assert resolve_registry_version("models:/vessels@champion") == (
        "models:/vessels/1",
        "vessels",
        "1",
    )
    served = load_served_model(ServeSettings(model="models:/vessels@champion"))
    assert (served.name, served.version, served.source) == (
        "vessels",
        "1",
        "models:/vessels@champion",
    )


def test_unknown_alias_names_the_fix(tracking: str) -> None:
    with pytest.raises(MinivessError, match="MINIVESS_SERVE__MODEL"):
        resolve_registry_version("models:/nothing@champion")


def test_relative_model_path_is_taken_from_the_project_root(tmp_path: Path) -> None:
    settings = ServeSettings.model_validate({"model": "runs/best.pt"}, context={"root": tmp_path})
    assert settings.model == str(tmp_path / "runs" / "best.pt")
    assert ServeSettings(model="models:/m@champion").model == "models:/m@champion"
