"""Exceptions that carry a message meant for the user.

The CLI prints a :class:`MinivessError` as one line and exits with a non-zero code; anything
else is a bug and shows a traceback only with ``--debug``.
"""

from __future__ import annotations

from pathlib import Path


class MinivessError(Exception):
    """An error caused by the user's input or environment, with a message saying how to fix it."""


class DataError(MinivessError):
    """A data file or dataset that fails a rule.

    Args:
        path: The offending file or folder (shown to the user).
        rule: Short machine-friendly name of the broken rule, e.g. ``"label-binary"``.
        message: What is wrong and, where possible, how to fix it.
    """

    def __init__(self, path: str | Path | None, rule: str, message: str) -> None:
        self.path = Path(path) if path is not None else None
        self.rule = rule
        self.message = message
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}[{rule}] {message}")


class ConfigError(MinivessError):
    """An invalid configuration value; the message names the field."""


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (exporters, runtimes and MLflow raise pages).

    An empty message gives the exception type's name instead.
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
