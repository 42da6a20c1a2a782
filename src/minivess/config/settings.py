"""Deployment settings: where things live on this machine, never how an experiment behaves.

Values come from four layers, later ones winning:

1. the defaults of the pydantic models below (the packaged defaults, fit for a laptop);
2. ``configs/settings.toml`` of the project: ``[default]`` for every environment, then the
   section of the active environment (``[development]`` unless ``MINIVESS_ENV`` says otherwise,
   e.g. ``MINIVESS_ENV=production``);
3. ``.secrets.toml`` (git-ignored, same sections), the only file allowed to hold ``secrets``;
4. environment variables ``MINIVESS_<SECTION>__<KEY>``, e.g. ``MINIVESS_TRACKING__URI=...``,
   plus the short ``MINIVESS_VESSELNN_DIR`` for ``data.vesselnn_dir``.

Both files are looked up in the project root, the working directory unless given. Dynaconf does
the layering; the merged values are then validated by :class:`DeploymentSettings`, so a bad
value fails with the key named. Relative paths are taken from the project root.

Example:
    >>> settings = get_settings()  # doctest: +SKIP
    >>> settings.tracking.uri  # doctest: +SKIP
    'sqlite:////home/me/minivess/mlruns/mlflow.db'
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from dynaconf import Dynaconf
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from minivess.config.validation import describe_validation_error
from minivess.errors import ConfigError

SETTINGS_FILE = Path("configs") / "settings.toml"
"""Project settings file, relative to the project root."""
SECRETS_FILE = Path(".secrets.toml")
"""Git-ignored secrets file, relative to the project root."""
ENV_VAR_PREFIX = "MINIVESS"
ENV_SWITCHER = "MINIVESS_ENV"
VESSELNN_DIR_VAR = "MINIVESS_VESSELNN_DIR"
DEFAULT_ENV = "development"
BUILTIN_ENVS = ("development", "production")
"""Environments that always exist; ``configs/settings.toml`` may add more sections."""
_NON_ENV_SECTIONS = {"default", "global"}
_SECRET_SECTION = "secrets"
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


def _project_root(info: ValidationInfo) -> Path:
    context = info.context or {}
    return Path(context.get("root") or Path.cwd())


def _absolute(path: Path, root: Path) -> Path:
    """``path`` made absolute against ``root``, without resolving symlinks."""
    return Path(os.path.normpath(root / path.expanduser()))


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, use_attribute_docstrings=True
    )


class TrackingSettings(_Section):
    """Where MLflow keeps runs and artifacts."""

    uri: str = "sqlite:///mlruns/mlflow.db"
    """MLflow tracking URI; a relative ``sqlite:///`` path is taken from the project root."""
    artifact_location: str | None = "mlruns/artifacts"
    """Artifact store of new experiments: a URI (``s3://...``) or a path (relative to the
    project root); ``None`` leaves it to the tracking server."""
    experiment: str = Field(default="minivess", min_length=1)
    """MLflow experiment used when an experiment config does not name one."""

    @field_validator("uri")
    @classmethod
    def _absolute_sqlite(cls, uri: str, info: ValidationInfo) -> str:
        prefix = "sqlite:///"
        if uri.startswith(prefix) and not Path(uri.removeprefix(prefix)).is_absolute():
            return prefix + str(_absolute(Path(uri.removeprefix(prefix)), _project_root(info)))
        return uri

    @field_validator("artifact_location")
    @classmethod
    def _absolute_location(cls, location: str | None, info: ValidationInfo) -> str | None:
        if location is None or _URI_SCHEME.match(location):
            return location
        return _absolute(Path(location), _project_root(info)).as_uri()


class DataSettings(_Section):
    """Where datasets live on this machine."""

    root: Path = Path("data/prepared")
    """Folder holding prepared datasets, one subfolder each (``<root>/vesselnn``)."""
    vesselnn_dir: Path = Path("../shared/data/vesselnn")
    """The VesselNN dataset (``denoised/``, ``labels/``, ``metadata/``);
    ``MINIVESS_VESSELNN_DIR`` overrides every other layer."""

    @field_validator("root", "vesselnn_dir")
    @classmethod
    def _absolute_paths(cls, path: Path, info: ValidationInfo) -> Path:
        return _absolute(path, _project_root(info))


class DvcSettings(_Section):
    """Data versioning."""

    remote: str | None = None
    """URL of the DVC remote (``s3://bucket/prefix`` or a folder); ``None`` keeps whatever
    ``.dvc/config`` says."""


class ServeSettings(_Section):
    """The model server."""

    host: str = Field(default="127.0.0.1", min_length=1)
    """Interface to bind; the default serves this machine only."""
    port: int = Field(default=3000, ge=1, le=65535)
    """TCP port."""
    model: str = Field(default="models:/minivess@champion", min_length=1)
    """Model loaded at start-up: an MLflow URI (``models:/<name>@<alias>``,
    ``models:/<name>/<version>``, ``runs:/...``), a checkpoint, a model folder or an export;
    a relative path is taken from the project root."""
    backend: Literal["torch", "onnx"] | None = None
    """Runtime of the network: ``torch`` or ``onnx`` (ONNX Runtime); unset: ``onnx`` for an
    exported ``.onnx`` model, else ``torch``."""
    device: str = Field(default="cpu", min_length=1)
    """Where the network runs (``cpu``, ``cuda``, ``cuda:N``)."""
    max_upload_mb: float = Field(default=256.0, gt=0)
    """Largest request body accepted, in MiB; larger uploads get 413 before being read."""
    max_voxels: int = Field(default=64_000_000, gt=0)
    """Largest volume segmented (H*W*D, checked from the file header before decoding)."""
    drift_reference: Path | None = None
    """Feature table (CSV) of reference volumes, e.g. the ``features_reference.csv`` that
    ``minivess drift`` writes; served volumes are tested against it. Unset: no drift
    monitoring. A relative path is taken from the project root."""
    drift_window: int = Field(default=64, ge=2)
    """Feature rows (crops) of the most recent served volumes that each drift test compares
    with the reference; no verdict until this many have been collected."""
    drift_tile: int = Field(default=128, ge=8)
    """Crop side (voxels) of one feature row: the ``--tile`` the reference was made with."""
    release_memory_idle_s: float | None = Field(default=2.0, ge=0)
    """Seconds without a request after which the worker hands its freed heap back to the OS
    (glibc ``malloc_trim``), so its memory returns to the idle level after load; unset: keep
    the allocator's default (memory stays at the high-water mark of the busiest burst)."""

    @field_validator("model")
    @classmethod
    def _absolute_model(cls, model: str, info: ValidationInfo) -> str:
        if _URI_SCHEME.match(model):
            return model
        return str(_absolute(Path(model), _project_root(info)))

    @field_validator("drift_reference")
    @classmethod
    def _absolute_reference(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        return None if path is None else _absolute(path, _project_root(info))


class DemoSettings(_Section):
    """The interactive Gradio demo (``minivess demo``)."""

    host: str = Field(default="127.0.0.1", min_length=1)
    """Interface to bind; the default serves this machine only."""
    port: int = Field(default=7860, ge=1, le=65535)
    """TCP port."""
    max_upload_mb: float = Field(default=256.0, gt=0)
    """Largest file a user may upload, in MiB."""
    max_voxels: int = Field(default=64_000_000, gt=0)
    """Largest volume (H x W x D) segmented; checked from the header before decoding."""


class TelemetrySettings(_Section):
    """OpenTelemetry traces and metrics; off unless an OTLP endpoint is configured."""

    otlp_endpoint: str | None = None
    """Base URL of an OTLP/HTTP receiver (``http://127.0.0.1:4318``); unset falls back to the
    standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` variable, and telemetry stays off if neither is
    set."""
    export_timeout_s: float = Field(default=1.0, gt=0, le=60)
    """Longest one export may block, at process exit too: what a dead collector can cost."""


class SecretSettings(_Section):
    """Credentials; accepted only from ``.secrets.toml`` or ``MINIVESS_SECRETS__*`` variables."""

    s3_access_key_id: SecretStr | None = None
    """Access key of the S3 (or S3-compatible) store behind the DVC remote or artifacts."""
    s3_secret_access_key: SecretStr | None = None
    """Secret key matching ``s3_access_key_id``."""

    @model_validator(mode="after")
    def _both_or_neither(self) -> SecretSettings:
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("set both s3_access_key_id and s3_secret_access_key, or neither")
        return self


class DeploymentSettings(BaseModel):
    """Validated deployment settings of one environment; build it with :func:`get_settings`.

    Unknown top-level keys are ignored because unrelated ``MINIVESS_*`` variables share the
    prefix; unknown keys inside a section are errors.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, use_attribute_docstrings=True)

    env: str = DEFAULT_ENV
    """Active environment (``MINIVESS_ENV``)."""
    root: Path
    """Project root the settings files were read from and relative paths resolved against."""
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    dvc: DvcSettings = Field(default_factory=DvcSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    demo: DemoSettings = Field(default_factory=DemoSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    secrets: SecretSettings = Field(default_factory=SecretSettings)


_SECTIONS = set(DeploymentSettings.model_fields) - {"env", "root"}
_cache: dict[Path, DeploymentSettings] = {}


def get_settings(root: str | Path | None = None, *, reload: bool = False) -> DeploymentSettings:
    """The deployment settings of the active environment, read once per project root.

    Args:
        root: Project root holding ``configs/settings.toml`` and ``.secrets.toml``; the
            working directory if ``None``.
        reload: Read the files and environment variables again instead of returning the
            cached value (tests, or after changing ``MINIVESS_*`` variables).

    Returns:
        The validated settings.

    Raises:
        ConfigError: Unknown environment, a secret outside ``.secrets.toml``, an unknown key,
            or an invalid value; the message names the key.
    """
    project = Path(os.path.abspath(root if root is not None else Path.cwd()))
    if reload or project not in _cache:
        _cache[project] = _load(project)
    return _cache[project]


def _load(project: Path) -> DeploymentSettings:
    settings_file = project / SETTINGS_FILE
    envs = _check_settings_file(settings_file, allow_secrets=False)
    _check_settings_file(project / SECRETS_FILE, allow_secrets=True)
    raw = Dynaconf(
        envvar_prefix=ENV_VAR_PREFIX,
        env_switcher=ENV_SWITCHER,
        environments=True,
        env=DEFAULT_ENV,
        settings_files=[str(settings_file), str(project / SECRETS_FILE)],
        load_dotenv=False,
        merge_enabled=True,
    )
    env = str(raw.current_env).lower()
    if env not in envs:
        raise ConfigError(
            f"{ENV_SWITCHER}={env!r} names no environment; known: {', '.join(sorted(envs))} "
            f"(add a [{env}] section to {settings_file} to define it)"
        )
    values: dict[str, Any] = {
        key.lower(): _plain(value)
        for key, value in raw.as_dict().items()
        if key.lower() in _SECTIONS
    }
    for section in _SECTIONS:  # validated with the project root as context, even if unset
        values.setdefault(section, {})
    if VESSELNN_DIR_VAR in os.environ and isinstance(values["data"], dict):
        values["data"]["vesselnn_dir"] = os.environ[VESSELNN_DIR_VAR]
    try:
        return DeploymentSettings.model_validate(
            {**values, "env": env, "root": project}, context={"root": project}
        )
    except ValidationError as exc:
        first = "__".join(str(part) for part in exc.errors()[0]["loc"]).upper()
        raise ConfigError(
            f"invalid deployment settings (environment {env!r}): "
            f"{describe_validation_error(exc)}; fix it in {SETTINGS_FILE}, {SECRETS_FILE} or "
            f"the environment variable {ENV_VAR_PREFIX}_{first}"
        ) from None


def _check_settings_file(path: Path, *, allow_secrets: bool) -> set[str]:
    """Environments ``path`` defines; rejects unknown sections, and secrets unless allowed."""
    envs = set(BUILTIN_ENVS)
    if not path.is_file():
        return envs
    try:
        tables = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read settings: {exc}") from None
    for env, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(
                f"{path}: top-level key {env!r} must sit in an environment section such as "
                f"[default] or [{DEFAULT_ENV}]"
            )
        if env.lower() not in _NON_ENV_SECTIONS:
            envs.add(env.lower())
        _check_sections(path, env, table, allow_secrets=allow_secrets)
    return envs


def _check_sections(path: Path, env: str, table: dict[str, Any], *, allow_secrets: bool) -> None:
    allowed = _SECTIONS if allow_secrets else _SECTIONS - {_SECRET_SECTION}
    for key in table:
        if key.lower() == _SECRET_SECTION and not allow_secrets:
            raise ConfigError(
                f"{path}: [{env}] sets {key!r}; secrets belong in {SECRETS_FILE} "
                f"(git-ignored) or {ENV_VAR_PREFIX}_SECRETS__<KEY> environment variables"
            )
        if key.lower() not in allowed and not key.lower().startswith("dynaconf"):
            raise ConfigError(
                f"{path}: [{env}] has unknown key {key!r}; known sections: "
                + ", ".join(sorted(allowed))
            )


def _plain(value: Any) -> Any:
    """Dynaconf boxes turned into plain dicts with lower-case keys."""
    if isinstance(value, dict):
        return {str(k).lower(): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
