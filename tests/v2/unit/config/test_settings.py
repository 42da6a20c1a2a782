from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from minivess.config.settings import SECRETS_FILE, SETTINGS_FILE, get_settings
from minivess.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[4]

PROJECT_SETTINGS = """
[default]
tracking.experiment = "lab"

[development]
serve.port = 3001

[production]
tracking.uri = "http://mlflow.internal:5000"
serve.host = "0.0.0.0"
serve.port = 8080
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MINIVESS_* variable of the developer's shell leaks into these tests."""
    for name in list(os.environ):
        if name.startswith("MINIVESS_"):
            monkeypatch.delenv(name)


def write(project: Path, relative: Path | str, text: str) -> None:
    path = project / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_defaults_without_files_live_under_the_project_root(tmp_path: Path) -> None:
    settings = get_settings(tmp_path, reload=True)

    assert settings.env == "development"
    assert settings.tracking.uri == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    assert settings.tracking.artifact_location == (tmp_path / "mlruns" / "artifacts").as_uri()
    assert settings.data.root == tmp_path / "data" / "prepared"
    assert settings.data.vesselnn_dir == tmp_path.parent / "shared" / "data" / "vesselnn"
    assert (settings.serve.host, settings.serve.port) == ("127.0.0.1", 3000)
    assert settings.dvc.remote is None
    assert settings.secrets.s3_access_key_id is None


def test_environment_switch_selects_the_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, SETTINGS_FILE, PROJECT_SETTINGS)

    development = get_settings(tmp_path, reload=True)
    monkeypatch.setenv("MINIVESS_ENV", "production")
    production = get_settings(tmp_path, reload=True)

    assert development.serve.port == 3001
    assert development.tracking.uri.startswith("sqlite:///")
    assert production.env == "production"
    assert production.tracking.uri == "http://mlflow.internal:5000"
    assert (production.serve.host, production.serve.port) == ("0.0.0.0", 8080)
    assert development.tracking.experiment == production.tracking.experiment == "lab"


def test_unknown_environment_lists_the_known_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, SETTINGS_FILE, PROJECT_SETTINGS + "\n[staging]\nserve.port = 9\n")
    monkeypatch.setenv("MINIVESS_ENV", "prodution")

    with pytest.raises(ConfigError, match=r"'prodution'.*development, production, staging"):
        get_settings(tmp_path, reload=True)

    monkeypatch.setenv("MINIVESS_ENV", "staging")
    assert get_settings(tmp_path, reload=True).serve.port == 9


def test_environment_variables_override_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, SETTINGS_FILE, PROJECT_SETTINGS)
    monkeypatch.setenv("MINIVESS_TRACKING__URI", "http://127.0.0.1:5999")
    monkeypatch.setenv("MINIVESS_SERVE__PORT", "9000")
    monkeypatch.setenv("MINIVESS_DVC__REMOTE", "s3://bucket/dvc")

    settings = get_settings(tmp_path, reload=True)

    assert settings.tracking.uri == "http://127.0.0.1:5999"
    assert settings.serve.port == 9000
    assert settings.dvc.remote == "s3://bucket/dvc"
    assert settings.tracking.experiment == "lab"  # untouched keys keep the file's value


def test_vesselnn_dir_variable_wins_and_relative_paths_use_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, SETTINGS_FILE, '[default]\ndata.vesselnn_dir = "elsewhere"\n')
    assert get_settings(tmp_path, reload=True).data.vesselnn_dir == tmp_path / "elsewhere"

    monkeypatch.setenv("MINIVESS_VESSELNN_DIR", str(tmp_path / "real"))
    assert get_settings(tmp_path, reload=True).data.vesselnn_dir == tmp_path / "real"


def test_secrets_come_from_the_secrets_file_and_stay_hidden(tmp_path: Path) -> None:
    write(
        tmp_path,
        SECRETS_FILE,
        '[default]\nsecrets.s3_access_key_id = "AKIAEXAMPLE"\n'
        'secrets.s3_secret_access_key = "very-secret"\n',
    )

    settings = get_settings(tmp_path, reload=True)

    assert settings.secrets.s3_secret_access_key is not None
    assert settings.secrets.s3_secret_access_key.get_secret_value() == "very-secret"
    assert "very-secret" not in repr(settings)


def test_secrets_come_from_environment_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINIVESS_SECRETS__S3_ACCESS_KEY_ID", "AKIAENV")
    monkeypatch.setenv("MINIVESS_SECRETS__S3_SECRET_ACCESS_KEY", "env-secret")

    secret = get_settings(tmp_path, reload=True).secrets.s3_access_key_id

    assert secret is not None
    assert secret.get_secret_value() == "AKIAENV"


def test_secrets_in_the_project_settings_file_are_refused(tmp_path: Path) -> None:
    write(tmp_path, SETTINGS_FILE, '[default]\nsecrets.s3_access_key_id = "AKIA"\n')

    with pytest.raises(ConfigError, match=r"secrets belong in \.secrets\.toml"):
        get_settings(tmp_path, reload=True)


def test_half_a_credential_pair_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, SECRETS_FILE, '[default]\nsecrets.s3_access_key_id = "AKIA"\n')

    with pytest.raises(ConfigError, match=r"secrets: set both s3_access_key_id"):
        get_settings(tmp_path, reload=True)


def test_secrets_file_is_ignored_by_git() -> None:
    git = shutil.which("git")
    if git is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("needs git and the project checkout")
    result = subprocess.run(
        [git, "check-ignore", "--quiet", str(SECRETS_FILE)], cwd=REPO_ROOT, check=False
    )
    assert result.returncode == 0, f"{SECRETS_FILE} must be listed in .gitignore"


def test_invalid_value_names_the_key_and_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINIVESS_SERVE__PORT", "not-a-port")

    with pytest.raises(ConfigError, match=r"serve\.port: Input should be a valid integer") as err:
        get_settings(tmp_path, reload=True)
    assert "MINIVESS_SERVE__PORT" in str(err.value)


def test_unknown_keys_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIVESS_TRACKING__URL", "http://typo")
    with pytest.raises(ConfigError, match=r"tracking\.url: Extra inputs are not permitted"):
        get_settings(tmp_path, reload=True)

    monkeypatch.delenv("MINIVESS_TRACKING__URL")
    write(tmp_path, SETTINGS_FILE, '[default]\ntraking.uri = "x"\n')
    with pytest.raises(ConfigError, match=r"unknown key 'traking'"):
        get_settings(tmp_path, reload=True)


def test_settings_are_cached_until_reloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = get_settings(tmp_path, reload=True)
    monkeypatch.setenv("MINIVESS_SERVE__PORT", "9100")

    assert get_settings(tmp_path) is first
    assert get_settings(tmp_path, reload=True).serve.port == 9100


def test_the_projects_own_settings_file_is_valid_in_every_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A copy, so the cached settings of the real checkout stay as the session found them.
    write(tmp_path, SETTINGS_FILE, (REPO_ROOT / SETTINGS_FILE).read_text(encoding="utf-8"))
    development = get_settings(tmp_path, reload=True)
    monkeypatch.setenv("MINIVESS_ENV", "production")
    production = get_settings(tmp_path, reload=True)

    assert development.tracking.uri == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    assert development.data.vesselnn_dir == tmp_path.parent / "shared" / "data" / "vesselnn"
    assert production.tracking.uri.startswith("http://")
    assert production.tracking.artifact_location is None  # the tracking server decides
