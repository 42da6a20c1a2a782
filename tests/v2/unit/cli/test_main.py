"""The ``minivess`` command: help, version, one-line errors and exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from minivess.cli.main import EXIT_USER_ERROR, main


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed console script in a fresh process, as a user would."""
    exe = Path(sys.executable).with_name("minivess")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120)


def test_help_lists_the_user_tasks() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "data" in result.stdout
    sub = run_cli("data", "--help")
    for command in ("prepare", "download", "synth"):
        assert command in sub.stdout


def test_user_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "random").mkdir()
    result = run_cli("data", "prepare", str(tmp_path / "random"), "--out", str(tmp_path / "o"))
    assert result.returncode == EXIT_USER_ERROR
    assert "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert message.startswith("error:")
    assert "unknown-layout" in message
    assert not (tmp_path / "o").exists()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run_cli("--debug", "data", "prepare", str(tmp_path / "missing"))
    assert result.returncode != 0
    assert "Traceback" in result.stderr
    assert "DataError" in result.stderr


def test_version_and_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert "minivess" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-command"])
    assert exit_info.value.code != 0
