"""The plugin registry: built-ins, entry points, and errors that list the valid names."""

from __future__ import annotations

import pytest

from minivess.errors import ConfigError
from minivess.registry import Registry


def test_unknown_name_lists_valid_names() -> None:
    reg: Registry[int] = Registry("minivess.tests.none", "widget")
    reg.register("b", 2)
    reg.register("a", 1)
    with pytest.raises(ConfigError, match=r"unknown widget 'c'; valid names: a, b"):
        reg.get("c")


def test_builtin_sources_come_from_entry_points() -> None:
    from minivess.data.sources import SOURCES

    assert {"vesselnn", "minivess", "decathlon"} <= set(SOURCES.names())
