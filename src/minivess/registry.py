"""A small named registry of plugins, fed by built-ins and ``importlib.metadata`` entry points.

Modelled on MLflow's ``tracking/registry.py``: one registry per kind of plugin, ``register``
for built-ins, entry points for third-party packages, and an error listing the valid names.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from minivess.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names mapped to plugin objects (classes or factories).

    Args:
        group: Entry-point group scanned for third-party plugins, e.g. ``"minivess.adapters"``.
        kind: Human name of the plugin kind, used in error messages ("adapter", "source").

    Example:
        >>> reg = Registry[int]("minivess.example", "number")
        >>> reg.register("one", 1)
        >>> reg.get("one")
        1
    """

    def __init__(self, group: str, kind: str) -> None:
        self.group = group
        self.kind = kind
        self._items: dict[str, T] = {}
        self._entry_points_loaded = False

    def register(self, name: str, item: T) -> None:
        """Add ``item`` under ``name``; a second registration of the same name replaces it."""
        self._items[name] = item

    def decorator(self, name: str) -> Callable[[T], T]:
        """``@registry.decorator("name")`` registers the decorated class or function."""

        def wrap(item: T) -> T:
            self.register(name, item)
            return item

        return wrap

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.group):
            if ep.name in self._items:
                continue
            try:
                self._items[ep.name] = ep.load()
            except Exception as exc:
                raise ConfigError(
                    f"{self.kind} plugin {ep.name!r} ({ep.value}) failed to load: {exc}"
                ) from exc

    def names(self) -> list[str]:
        """Every registered name, built-in and from entry points, sorted."""
        self._load_entry_points()
        return sorted(self._items)

    def get(self, name: str) -> T:
        """The plugin registered as ``name``; a :class:`ConfigError` listing valid names if none."""
        if name not in self._items:
            self._load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(self.names()) or "(none)"
            raise ConfigError(f"unknown {self.kind} {name!r}; valid names: {valid}") from None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()
