"""What a run was made of: flattened config, code and machine versions, and the dataset used."""

from __future__ import annotations

import json
import platform
import socket
import warnings
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from minivess.errors import ConfigError

MAX_PARAM_CHARS = 500
"""Longer parameter values are cut to this length (ending in ``...``); the full resolved
config is logged as the ``config.yaml`` artifact. (MLflow itself refuses values over 6000.)"""
DIGEST_CHARS = 36
"""Characters of the dataset version used as MLflow's dataset digest (a ``VARCHAR(36)``)."""


def config_dict(config: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    """``config`` as plain JSON values (a pydantic model is dumped in JSON mode).

    Raises:
        ConfigError: A value is not representable in JSON.
    """
    raw = config.model_dump(mode="json") if isinstance(config, BaseModel) else dict(config)
    try:
        return json.loads(json.dumps(raw))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"the run config must hold plain JSON values: {exc}") from None


def flatten_params(config: Mapping[str, Any]) -> dict[str, str]:
    """Nested config -> MLflow parameters with dotted keys.

    Lists and empty mappings become JSON text; values longer than :data:`MAX_PARAM_CHARS` are
    cut and end in ``...``.

    Example:
        >>> flatten_params({"training": {"optimizer": {"lr": 0.001}}, "patch": [96, 96, 16]})
        {'training.optimizer.lr': '0.001', 'patch': '[96, 96, 16]'}
    """
    flat: dict[str, str] = {}
    _flatten(config, "", flat)
    return flat


def _flatten(value: Mapping[str, Any], prefix: str, out: dict[str, str]) -> None:
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping) and item:
            _flatten(item, f"{name}.", out)
            continue
        text = item if isinstance(item, str) else json.dumps(item)
        if len(text) > MAX_PARAM_CHARS:
            text = text[: MAX_PARAM_CHARS - 3] + "..."
        out[name] = text


def provenance_tags() -> dict[str, str]:
    """Code and machine the run used: git commit, minivess/torch/monai/python, host, CPU, GPU."""
    import torch

    from minivess.adapters.checkpoint import code_version

    versions = code_version()
    tags = {
        "minivess_version": versions["minivess"],
        "git_commit": versions["git_commit"],
        "torch_version": versions["torch"],
        "monai_version": versions["monai"],
        "python_version": platform.python_version(),
        "host": socket.gethostname(),
        "cpu": cpu_model(),
    }
    if torch.cuda.is_available():
        tags["gpu"] = torch.cuda.get_device_name(0)
    return {key: value for key, value in tags.items() if value}


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def log_dataset_input(dataset_dir: str | Path) -> dict[str, str]:
    """Log a prepared dataset folder as the active run's training input.

    The manifest becomes an MLflow pandas dataset named after the dataset, whose digest is the
    start of its content version.

    Args:
        dataset_dir: A folder written by ``minivess data prepare`` (``dataset.json``,
            ``manifest.csv``).

    Returns:
        Tags for the run: ``{"dataset": name, "dataset_version": full content version}``.

    Raises:
        DataError: The folder is not a readable prepared dataset.
    """
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    from minivess.data.datasets import DATASET_INFO, read_dataset_version
    from minivess.data.manifest import read_manifest

    folder = Path(dataset_dir)
    version = read_dataset_version(folder)
    name = json.loads((folder / DATASET_INFO).read_text(encoding="utf-8")).get("name", folder.name)
    manifest = read_manifest(folder / "manifest.csv")
    with warnings.catch_warnings():
        # MLflow registers its local source class twice (an "ambiguous source" warning) and
        # hints about integer columns, which concern model signatures, not a dataset record.
        warnings.simplefilter("ignore", UserWarning)
        dataset = from_pandas(
            manifest, source=str(folder.resolve()), name=str(name), digest=version[:DIGEST_CHARS]
        )
        mlflow.log_input(dataset, context="training")
    return {"dataset": str(name), "dataset_version": version}
