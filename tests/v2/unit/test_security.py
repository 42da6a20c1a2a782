"""Security rules of the code base: safe deserialisation, local-only defaults, no secrets.

The deserialisation rules read the source's syntax tree: they are policies over every call
site, which no behavioural test of one code path could guarantee.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SRC = REPO / "src" / "minivess"
UNSAFE_MODULES = {"pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve", "marshal"}


def _trees() -> list[tuple[Path, ast.AST]]:
    return [(p, ast.parse(p.read_text(encoding="utf-8"))) for p in sorted(SRC.rglob("*.py"))]


def _is_torch_load(node: ast.Call) -> bool:
    func = node.func
    return (
        isinstance(func, ast.Attribute)
        and func.attr == "load"
        and isinstance(func.value, ast.Name)
        and func.value.id == "torch"
    )


def test_every_torch_load_passes_weights_only_true() -> None:
    calls, unsafe = 0, []
    for path, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _is_torch_load(node):
                calls += 1
                flag = next((k.value for k in node.keywords if k.arg == "weights_only"), None)
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    unsafe.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert calls >= 2  # the checkpoint reader and the resume path
    assert unsafe == []


def test_no_module_unpickles_anything() -> None:
    imports = []
    for path, tree in _trees():
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            imports += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names]
    assert [entry for entry in imports if entry.split()[-1] in UNSAFE_MODULES] == []


def test_services_bind_this_machine_only_by_default() -> None:
    from minivess.config.settings import DemoSettings, ServeSettings

    assert ServeSettings().host == "127.0.0.1"
    assert DemoSettings().host == "127.0.0.1"


def test_compose_credentials_live_in_a_git_ignored_env_file() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", ".env"], cwd=REPO, check=False
    ).returncode
    assert ignored == 0
    example = (REPO / ".env.example").read_text(encoding="utf-8")
    assert "POSTGRES_PASSWORD=" in example
    assert "${POSTGRES_PASSWORD:?" in (REPO / "docker-compose.yml").read_text(encoding="utf-8")


def _scan(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / ".ci" / "secret_scan.py"), *map(str, files)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("-----BEGIN RSA " + "PRIVATE KEY-----", "private key"),
        ("aws_key = " + "AKIA" + "Q3EGRIYTZVXW7MNB", "AWS access key id"),
        ("token: gh" + "p_" + "a1B2c3D4" * 5, "GitHub token"),
        ("uri = postgresql://mlflow:" + "s3cr3tPa55" + "@db:5432/mlflow", "credentials in a URL"),
        ('PASSWORD = "' + "Zq8vN2xLw4Rk" + '"', "hard-coded password"),
    ],
)
def test_secret_scan_finds_planted_secrets(line: str, kind: str, tmp_path: Path) -> None:
    planted = tmp_path / "settings.py"
    planted.write_text(f"x = 1\n{line}\n", encoding="utf-8")
    found = _scan(planted)
    assert found.returncode == 1
    assert found.stdout.strip() == f"{planted}:2: possible {kind}"
    assert line.split()[-1] not in found.stdout  # the secret itself is never printed


def test_placeholders_and_the_repository_pass_the_secret_scan(tmp_path: Path) -> None:
    placeholders = tmp_path / "example.env"
    placeholders.write_text(
        'POSTGRES_PASSWORD="change-me"\npassword = "${POSTGRES_PASSWORD}"\n', encoding="utf-8"
    )
    assert _scan(placeholders).returncode == 0
    repository = _scan()
    assert repository.returncode == 0, repository.stdout
