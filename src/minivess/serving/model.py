"""The model a service instance serves: which one, and the :class:`Predictor` that runs it.

A registry alias (``models:/<name>@champion``) is resolved to its version *before* loading,
and that exact version is loaded, so the version the service reports is the one it runs even
if the alias moves while it starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minivess.config.settings import ServeSettings
from minivess.errors import MinivessError, first_line

if TYPE_CHECKING:
    from minivess.inference import Predictor

_ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)$")
_VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")
_ANY_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


@dataclass(frozen=True)
class ServedModel:
    """A loaded model and how to name it in responses.

    Args:
        predictor: The one prediction path (:class:`minivess.inference.Predictor`).
        source: The configured source (``serve.model``), as given.
        name: Registered model name, for a ``models:/`` source.
        version: Registered version actually loaded, for a ``models:/`` source.
    """

    predictor: Predictor
    source: str
    name: str | None
    version: str | None

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for responses (source, name, version, adapter, ...)."""
        info = self.predictor.model
        return {
            "source": self.source,
            "name": self.name,
            "version": self.version,
            "backend": self.predictor.backend,
            "adapter": info.adapter,
            "data_version": info.data_version,
            "created_at": info.created_at,
        }


def load_served_model(settings: ServeSettings) -> ServedModel:
    """Load ``settings.model`` on ``settings.device`` with ``settings.backend`` (or the default).

    Raises:
        MinivessError: The registry has no such model, version or alias, or the source is
            not a loadable model (the message names it and how to fix it).
    """
    from minivess.inference import Predictor

    uri, name, version = resolve_registry_version(settings.model)
    predictor = Predictor.from_source(uri, device=settings.device, backend=settings.backend)
    return ServedModel(predictor, settings.model, name, version)


def resolve_registry_version(source: str) -> tuple[str, str | None, str | None]:
    """``(uri to load, registered name, version)`` of a model source.

    ``models:/<name>@<alias>`` becomes ``models:/<name>/<version>``; other sources load as
    given, with a name and version only for ``models:/<name>/<version>``.

    Raises:
        MinivessError: The alias does not exist in the configured registry.
    """
    if (match := _VERSION_URI.match(source)) is not None:
        return source, match["name"], match["version"]
    if (match := _ALIAS_URI.match(source)) is None:
        return source, None, None
    from minivess.tracking.setup import ensure_configured, import_mlflow

    tracking_uri = ensure_configured()
    mlflow = import_mlflow()
    from mlflow.exceptions import MlflowException

    name, alias = match["name"], match["alias"]
    try:
        version = str(mlflow.MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        reason = first_line(exc)
        raise MinivessError(
            f"cannot resolve {source} in the registry at {tracking_uri}: {reason}; register "
            "and promote a model first (minivess train registers the champion), or set "
            "serve.model (MINIVESS_SERVE__MODEL) to a checkpoint"
        ) from None
    return f"models:/{name}/{version}", name, version


def check_model_exists(source: str) -> None:
    """Check cheaply, without loading anything heavy, that ``source`` names a model.

    ``minivess serve`` calls this before starting BentoML: a worker that cannot load its model
    leaves ``bentoml serve`` running with no worker instead of failing.

    Raises:
        MinivessError: A ``models:/<name>@<alias>`` that resolves to nothing, or a path that
            does not exist. Other URIs are left to the loader.
    """
    if _ANY_URI.match(source):
        resolve_registry_version(source)
    elif not Path(source).exists():
        raise MinivessError(
            f"model {source} does not exist; set serve.model (MINIVESS_SERVE__MODEL) or pass "
            "--model with a checkpoint, model folder, .onnx export or models:/<name>@<alias>"
        )
