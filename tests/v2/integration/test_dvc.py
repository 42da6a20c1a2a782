"""The shipped DVC pipeline runs offline: repro, push, pull back; and through S3 (moto)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from minivess.data.manifest import read_manifest

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=300, env=env or _env()
    )
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    env.update(extra)
    return env


@pytest.fixture
def project(tmp_path: Path, synthetic_dataset_dir: Path) -> Path:
    """A git+DVC project with the repository's dvc.yaml and DVC config, reading synthetic data."""
    proj = tmp_path / "proj"
    proj.mkdir()
    _run(["git", "init", "-q"], proj)
    shutil.copy(REPO / "dvc.yaml", proj / "dvc.yaml")
    shutil.copytree(REPO / ".dvc", proj / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    shutil.copy(REPO / ".dvcignore", proj / ".dvcignore")
    shutil.copytree(
        REPO / "src" / "minivess",
        proj / "src" / "minivess",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    params = yaml.safe_load((REPO / "configs" / "pipeline.yaml").read_text())
    params["data"]["source_dir"] = str(synthetic_dataset_dir)
    (proj / "configs").mkdir()
    (proj / "configs" / "pipeline.yaml").write_text(yaml.safe_dump(params))
    return proj


def test_shipped_config_defaults_to_a_local_remote() -> None:
    config = (REPO / ".dvc" / "config").read_text()
    assert "remote = local" in config
    assert "url = ../dvc-remote" in config
    assert "endpointurl = http://127.0.0.1:9000" in config  # the compose stack's MinIO
    # DVC does not hash what it downloads unless asked: a corrupt remote object would be checked
    # out as data (tests/v2/integration/test_dvc_faults.py shows the refusal with this set).
    assert config.count("verify = true") == 2


def test_repro_push_pull_round_trip(project: Path) -> None:
    remote = project.parent / "remote"
    _run([str(BIN / "dvc"), "remote", "modify", "--local", "local", "url", str(remote)], project)
    _run([str(BIN / "dvc"), "repro", "prepare"], project)
    prepared = project / "data" / "prepared" / "vesselnn"
    manifest = read_manifest(prepared / "manifest.csv")
    assert len(manifest) == 4
    assert "didn't change" in _run([str(BIN / "dvc"), "repro", "prepare"], project)
    status = _run([str(BIN / "dvc"), "status", "prepare"], project)
    assert "up to date" in status.lower()

    _run([str(BIN / "dvc"), "push", "prepare"], project)
    before = {p.relative_to(prepared): p.read_bytes() for p in prepared.rglob("*") if p.is_file()}
    shutil.rmtree(prepared)
    shutil.rmtree(project / ".dvc" / "cache")
    _run([str(BIN / "dvc"), "pull", "prepare"], project)
    after = {p.relative_to(prepared): p.read_bytes() for p in prepared.rglob("*") if p.is_file()}
    assert after == before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def moto_s3():
    """A real S3-compatible server (moto) on 127.0.0.1, stopped after the test."""
    port = _free_port()
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("moto_server did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_push_and_pull_through_an_s3_remote(project: Path, moto_s3: str) -> None:
    import boto3

    creds = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    boto3.client(
        "s3",
        endpoint_url=moto_s3,
        **{
            "aws_access_key_id": "test",
            "aws_secret_access_key": "test",
            "region_name": "us-east-1",
        },
    ).create_bucket(Bucket="minivess-dvc")
    env = _env(**creds)
    _run(
        [str(BIN / "dvc"), "remote", "modify", "--local", "minio", "endpointurl", moto_s3],
        project,
        env,
    )
    _run([str(BIN / "dvc"), "repro", "prepare"], project, env)
    _run([str(BIN / "dvc"), "push", "-r", "minio", "prepare"], project, env)
    prepared = project / "data" / "prepared" / "vesselnn"
    manifest_bytes = (prepared / "manifest.csv").read_bytes()
    shutil.rmtree(prepared)
    shutil.rmtree(project / ".dvc" / "cache")
    _run([str(BIN / "dvc"), "pull", "-r", "minio", "prepare"], project, env)
    assert (prepared / "manifest.csv").read_bytes() == manifest_bytes
