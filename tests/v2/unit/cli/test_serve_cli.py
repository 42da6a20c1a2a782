"""``minivess serve``: a model that cannot be found fails in one line, before BentoML starts."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from minivess.cli.serve import serve
from minivess.errors import MinivessError


def cli() -> typer.Typer:
    """The command as the ``minivess`` app registers it (a group, so the name is required)."""
    app = typer.Typer()
    app.command("serve")(serve)
    app.command("noop", hidden=True)(lambda: None)
    return app


def test_missing_checkpoint_fails_before_serving(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli(), ["serve", "--model", str(tmp_path / "nope.pt")])
    assert isinstance(result.exception, MinivessError)
    assert "does not exist" in str(result.exception)


def test_alias_without_a_version_fails_before_serving(tracking: str) -> None:
    result = CliRunner().invoke(cli(), ["serve", "--model", "models:/nothing@champion"])
    assert isinstance(result.exception, MinivessError)
    assert "cannot resolve models:/nothing@champion" in str(result.exception)
