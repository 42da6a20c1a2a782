"""``minivess demo``: options are checked before anything is served."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from minivess.cli.demo import demo
from minivess.errors import ConfigError, DataError, MinivessError


def cli() -> typer.Typer:
    """The command as the ``minivess`` app registers it (a group, so the name is required)."""
    app = typer.Typer()
    app.command("demo")(demo)
    app.command("noop", hidden=True)(lambda: None)
    return app


def test_unknown_backend_is_refused() -> None:
    result = CliRunner().invoke(cli(), ["demo", "--backend", "tensorrt"])
    assert isinstance(result.exception, ConfigError)
    assert "backend must be one of torch, onnx; got 'tensorrt'" in str(result.exception)


def test_missing_examples_folder_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli(), ["demo", "--examples", str(tmp_path / "missing")])
    assert isinstance(result.exception, DataError)
    assert result.exception.rule == "missing-folder"


@pytest.mark.slow
def test_a_taken_port_is_a_user_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            cli(), ["demo", "--port", str(port), "--examples", str(tmp_path)]
        )
    assert isinstance(result.exception, MinivessError), result.output
    assert f"cannot serve the demo on 127.0.0.1:{port}" in str(result.exception)
