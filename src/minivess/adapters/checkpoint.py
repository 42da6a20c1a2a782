"""Self-describing checkpoints: the file alone rebuilds the adapter (nnU-Net style).

A checkpoint holds only plain Python values and tensors, so ``torch.load(path)`` with the
default ``weights_only=True`` reads it and loading never runs arbitrary pickled code.
"""

from __future__ import annotations

import io
import subprocess
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from minivess.data.io import atomic_path
from minivess.errors import ConfigError, DataError, first_line

if TYPE_CHECKING:
    from minivess.adapters.base import ModelAdapter

FORMAT = "minivess-checkpoint"
FORMAT_VERSION = 1

CheckpointValue = Any
"""Anything ``torch.load(weights_only=True)`` reads back: None, bool, int, float, str, bytes,
``torch.Tensor``, ``torch.dtype``, and dicts, lists and tuples of those (optimizer and scheduler
``state_dict()``, ``torch.get_rng_state()``, ``random.getstate()``, metrics). Convert numpy
arrays and scalars first (``torch.from_numpy(a)``, ``float(x)``)."""

# Exact types: subclasses (numpy scalars, torch's TorchVersion str, MetaTensor) are refused.
_PLAIN_LEAVES = frozenset(
    {type(None), bool, int, float, str, bytes, torch.Tensor, torch.nn.Parameter, torch.dtype}
)
_PLAIN_MAPPINGS = frozenset({dict, OrderedDict})
_PLAIN_SEQUENCES = frozenset({list, tuple})


class CheckpointError(DataError):
    """A file that is not a readable minivess checkpoint (corrupt, truncated, foreign, newer)."""


@dataclass(frozen=True)
class CheckpointInfo:
    """Everything in a checkpoint except the weights.

    Args:
        path: The file read.
        adapter: Registry name of the adapter (``"segresnet"``).
        config: The adapter config as plain values (``config.model_dump(mode="json")``).
        data_version: Version of the training data (e.g. a DVC hash), if recorded.
        code_version: ``minivess``, ``git_commit``, ``torch`` and ``monai`` versions at save time.
        created_at: ISO-8601 UTC time of saving.
        extra: Whatever the caller stored: optimizer/scheduler state, epoch, RNG state, metrics,
            run id.
    """

    path: Path
    adapter: str
    config: dict[str, Any]
    data_version: str | None
    code_version: dict[str, str | None]
    created_at: str
    extra: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(
    adapter: ModelAdapter,
    path: str | Path,
    *,
    data_version: str | None = None,
    extra: Mapping[str, CheckpointValue] | None = None,
) -> Path:
    """Write ``adapter`` with its config and provenance to ``path`` atomically.

    Args:
        adapter: The adapter whose weights and config to store.
        path: Destination file (conventionally ``*.pt``); replaced only once fully written.
        data_version: Version of the data the weights were trained on.
        extra: Plain values to keep beside the weights (see :data:`CheckpointValue`).

    Returns:
        ``path``.

    Raises:
        ConfigError: ``extra`` holds a value ``weights_only`` loading would refuse; the message
            gives its key path. Nothing is written.

    Example:
        >>> save_checkpoint(adapter, "best.pt", extra={"epoch": 12})  # doctest: +SKIP
    """
    extra = dict(extra or {})
    _check_plain(extra, "extra")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "adapter": adapter.name,
        "config": adapter.config.model_dump(mode="json"),
        "state_dict": {k: v.detach().cpu() for k, v in adapter.network.state_dict().items()},
        "data_version": data_version,
        "code_version": code_version(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "extra": extra,
    }
    path = Path(path)
    # Serialised in memory first: torch.save reports a full disk as a bare RuntimeError, a
    # plain write reports it as the OSError (ENOSPC, EFBIG, ...) that callers can act on.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())
    return path


def load_checkpoint(path: str | Path) -> tuple[ModelAdapter, CheckpointInfo]:
    """Rebuild the adapter stored in ``path`` (on CPU, in train mode) and return its metadata.

    Args:
        path: A file written by :func:`save_checkpoint`.

    Returns:
        ``(adapter, info)``; the adapter class is found through the ``minivess.adapters``
        registry by the name stored in the file.

    Raises:
        CheckpointError: Missing, corrupt, truncated, foreign or too-new file, an adapter that
            is not installed, or weights that do not fit the stored config.
    """
    from minivess.adapters import ADAPTERS

    path = Path(path)
    payload = _read(path)
    name = payload["adapter"]
    try:
        adapter = ADAPTERS.get(name).from_config(payload["config"])
    except ConfigError as exc:
        raise CheckpointError(path, "adapter", str(exc)) from None
    try:
        adapter.network.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError) as exc:
        raise CheckpointError(
            path, "state-dict", f"weights do not fit the stored {name} config: {exc}"
        ) from None
    info = CheckpointInfo(
        path=path,
        adapter=name,
        config=payload["config"],
        data_version=payload.get("data_version"),
        code_version=payload.get("code_version", {}),
        created_at=payload.get("created_at", ""),
        extra=payload.get("extra", {}),
    )
    return adapter, info


def _read(path: Path) -> dict[str, Any]:
    """The checkpoint's top-level dict, checked for format and version."""
    if not path.is_file():
        raise CheckpointError(path, "missing", "checkpoint file does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure here means the bytes are not a checkpoint
        reason = first_line(exc)
        raise CheckpointError(
            path, "unreadable", f"not a readable checkpoint (corrupt or truncated?): {reason}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            path,
            "format",
            "not a minivess checkpoint (a bare state_dict or another tool's file?); "
            "save with minivess.adapters.save_checkpoint",
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            path,
            "format-version",
            f"format_version {version!r} is newer than this minivess reads ({FORMAT_VERSION}); "
            "upgrade minivess",
        )
    expected = {"adapter": str, "config": dict, "state_dict": dict}
    bad = [k for k, kind in expected.items() if not isinstance(payload.get(k), kind)]
    if bad:
        raise CheckpointError(path, "format", f"checkpoint lacks a valid {', '.join(bad)}")
    return payload


def _check_plain(value: object, where: str) -> None:
    """Raise a ConfigError naming the first value ``weights_only`` loading would reject."""
    kind = type(value)
    if isinstance(value, dict) and kind in _PLAIN_MAPPINGS:
        for key, item in value.items():
            if type(key) not in (str, int):
                raise ConfigError(f"{where}: key {key!r} must be a str or int")
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, list | tuple) and kind in _PLAIN_SEQUENCES:
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif kind not in _PLAIN_LEAVES:
        raise ConfigError(
            f"{where}: {type(value).__module__}.{type(value).__qualname__} cannot be stored in a "
            "checkpoint; use plain Python values or torch tensors (e.g. torch.from_numpy(a))"
        )


def code_version() -> dict[str, str | None]:
    """Versions of the code that wrote a checkpoint: minivess, its git commit, torch, monai."""
    import monai

    import minivess

    return {
        "minivess": minivess.__version__,
        "git_commit": _git_commit(),
        "torch": str(torch.__version__),  # a str subclass weights_only loading refuses
        "monai": str(monai.__version__),
    }


@lru_cache(maxsize=1)
def _git_commit() -> str | None:
    """The commit of the minivess source tree, or None outside a git checkout."""
    import minivess

    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(minivess.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None
