"""``minivess calibrate --method``: the fitted map is stored with the model as plain JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from minivess.cli.main import app, main


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_calibrate_stores_platt_by_default_and_temperature_on_request(
    prepared_synthetic: Any, checkpoint: Path, tmp_path: Path
) -> None:
    from minivess.adapters import load_checkpoint
    from minivess.uncertainty import UncertaintyHead
    from minivess.uncertainty.calibration import PlattScaling, TemperatureScaling

    data = str(prepared_synthetic.out)
    outputs = {}
    for method in ("platt", "temperature"):
        out = tmp_path / f"{method}.pt"
        args = ["-m", str(checkpoint), "-d", data, "--subset", "all", "-o", str(out)]
        # a temperature on the untrained tiny model needs the balanced sample to stay positive
        chosen = ["--method", "temperature", "--sampling", "balanced"] if method != "platt" else []
        result = run("calibrate", *args, *chosen)
        assert result.exit_code == 0, result.output
        outputs[method] = out
        report = json.loads((tmp_path / f"{method}.d" / "report.json").read_text())
        assert report["calibration_method"] == method
        assert 0.0 <= report["calibration_argmax_moved"] <= 1.0
    _, info = load_checkpoint(outputs["platt"])
    head = UncertaintyHead.from_extra(info.extra)
    assert head is not None
    assert isinstance(head.calibration, PlattScaling)
    assert info.extra["uncertainty"]["calibration"]["method"] == "platt"
    assert head.calibration.sampling == "prevalence"
    assert "Platt scaling" in (tmp_path / "platt.d" / "model_card.md").read_text()
    _, info = load_checkpoint(outputs["temperature"])
    head = UncertaintyHead.from_extra(info.extra)
    assert head is not None
    assert isinstance(head.calibration, TemperatureScaling)


def test_an_unknown_method_is_refused_with_exit_code_2(
    prepared_synthetic: Any, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.pt"
    with pytest.raises(SystemExit) as exited:
        main(["calibrate", "-m", str(checkpoint), "-d", str(prepared_synthetic.out),
              "--method", "isotonic", "-o", str(out)])  # fmt: skip
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert "--method must be platt or temperature; got 'isotonic'" in captured.out + captured.err
    assert not out.exists()
