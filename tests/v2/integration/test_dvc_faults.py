"""``dvc pull`` killed mid-transfer, and a corrupt object in the remote, with the shipped config.

A temporary git+DVC project uses the repository's ``.dvc/config`` with its ``local`` remote
pointed at a temporary folder. It tracks one directory output: the real VesselNN files plus a
generated 96 MiB file, so that copies last long enough to be interrupted. ``dvc pull`` runs as a
real subprocess in its own process group and is killed with SIGKILL when a seeded random share
of the bytes it has to write is on disk; after every kill, every object in the cache must hash
to its name and every workspace file must match ``data/vesselnn.dvc`` (or be absent).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
SEED = 0
KILLS = 5
LARGE_BYTES = 96 * 2**20
POLL_S = 0.002
PARTIAL = re.compile(r"^\..+\.tmp$")
"""DVC copies into ``.<random>.tmp`` beside the target and renames it into place."""

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _env() -> dict[str, str]:
    return dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")


def _dvc(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "dvc"), *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
        check=False,
    )


def _ok(project: Path, *args: str) -> str:
    result = _dvc(project, *args)
    assert result.returncode == 0, f"dvc {args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def _digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as stream:
        while chunk := stream.read(2**20):
            digest.update(chunk)
    return digest.hexdigest()


def _files(root: Path) -> list[Path]:
    """Regular files under ``root``; files renamed or removed while walking are skipped."""
    found = []
    for folder, _, names in os.walk(root):
        found.extend(Path(folder) / name for name in names)
    return found


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@dataclass(frozen=True)
class Project:
    """A pushed DVC project whose cache and workspace were emptied."""

    root: Path
    remote: Path
    sha256: dict[str, str]
    """SHA-256 of every original file, by path relative to the output folder."""
    md5: dict[str, str]
    """MD5 of every file as recorded by DVC (the ``.dir`` object ``data/vesselnn.dvc`` names)."""
    data_bytes: int
    """Size of all tracked files together."""

    @property
    def out(self) -> Path:
        return self.root / "data" / "vesselnn"

    @property
    def cache(self) -> Path:
        return self.root / ".dvc" / "cache"

    def remote_object(self, relpath: str) -> Path:
        oid = self.md5[relpath]
        return self.remote / "files" / "md5" / oid[:2] / oid[2:]


def _pushed_project(tmp_path: Path, vesselnn_dir: Path, large_bytes: int) -> Project:
    root, remote = tmp_path / "proj", tmp_path / "remote"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    _ok(root, "init", "-q")
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    _ok(root, "remote", "modify", "--local", "local", "url", str(remote))
    _ok(root, "config", "--local", "core.site_cache_dir", str(tmp_path / "site-cache"))

    out = root / "data" / "vesselnn"
    for source in sorted(p for p in vesselnn_dir.rglob("*") if p.is_file()):
        target = out / source.relative_to(vesselnn_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)  # plain copy: the shared originals are read-only
    if large_bytes:
        (out / "generated").mkdir()
        (out / "generated" / "large.bin").write_bytes(
            np.random.default_rng(SEED).bytes(large_bytes)
        )
    sha256 = {str(p.relative_to(out)): _digest(p, "sha256") for p in _files(out)}
    data_bytes = sum(p.stat().st_size for p in _files(out))

    _ok(root, "add", "-q", "data/vesselnn")
    _ok(root, "push", "-q")
    (tracked,) = yaml.safe_load((root / "data" / "vesselnn.dvc").read_text())["outs"]
    dir_oid = tracked["md5"]
    listing = json.loads((remote / "files" / "md5" / dir_oid[:2] / dir_oid[2:]).read_text())
    md5 = {entry["relpath"]: entry["md5"] for entry in listing}
    assert set(md5) == set(sha256)

    shutil.rmtree(out)
    shutil.rmtree(root / ".dvc" / "cache")
    return Project(root, remote, sha256, md5, data_bytes)


def _cache_violations(project: Project) -> list[str]:
    """Cache files whose content disagrees with the hash they are named after."""
    bad = []
    for path in _files(project.cache):
        if PARTIAL.match(path.name):
            continue
        oid = path.parent.name + path.name.removesuffix(".dir")
        if _digest(path, "md5") != oid:
            bad.append(f"cache {path.relative_to(project.cache)} does not hash to its name")
    return bad


def _workspace_violations(project: Project) -> list[str]:
    """Workspace files that are neither a tracked file with its recorded hash nor a partial."""
    bad = []
    for path in _files(project.out):
        relpath = str(path.relative_to(project.out))
        if PARTIAL.match(path.name):
            continue
        if relpath not in project.md5:
            bad.append(f"unexpected workspace file {relpath}")
        elif _digest(path, "md5") != project.md5[relpath]:
            bad.append(f"workspace {relpath} differs from data/vesselnn.dvc")
    return bad


def _partials(root: Path) -> set[Path]:
    return {p for p in _files(root) if PARTIAL.match(p.name)}


def _written(project: Project, leftovers: set[Path]) -> int:
    """Bytes in the cache and the workspace, not counting partials left by earlier runs."""
    paths = _files(project.cache) + _files(project.out)
    return sum(_size(p) for p in paths if p not in leftovers)


def _pull_command(project: Project) -> list[str]:
    """The documented way to continue: ``--force`` only to drop DVC's own partial copies."""
    force = ["--force"] if project.out.exists() and _partials(project.out) else []
    return [str(BIN / "dvc"), "pull", "-q", *force]


def _pull_and_kill(
    project: Project, target_bytes: int, command: list[str] | None = None
) -> dict[str, object]:
    """Start a pull (``dvc pull`` unless ``command`` is given) and SIGKILL its process group
    once ``target_bytes`` are on disk (partial copies left by earlier kills not counted)."""
    leftovers = _partials(project.root)
    command = command or _pull_command(project)
    process = subprocess.Popen(
        command,
        cwd=project.root,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    written = 0
    while process.poll() is None:
        written = _written(project, leftovers)
        if written >= target_bytes:
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(POLL_S)
    _, stderr = process.communicate(timeout=300)
    new_partials = _partials(project.root) - leftovers
    return {
        "force": "--force" in command,
        "target_bytes": target_bytes,
        "written_bytes": written,
        "killed": process.returncode == -signal.SIGKILL,
        "returncode": process.returncode,
        "stderr": stderr.decode()[-500:],
        "partial_files": {str(p.relative_to(project.root)): _size(p) for p in new_partials},
    }


def test_pull_killed_at_random_moments_never_leaves_corrupt_data(
    tmp_path: Path, vesselnn_dir: Path
) -> None:
    project = _pushed_project(tmp_path, vesselnn_dir, LARGE_BYTES)
    to_write = 2 * project.data_bytes  # every file lands in the cache and in the workspace
    rng = np.random.default_rng(SEED)
    kills = []
    for share in sorted(rng.uniform(0.02, 0.98, size=KILLS)):
        kill = _pull_and_kill(project, int(share * to_write))
        kills.append(kill)
        print(json.dumps({k: v for k, v in kill.items() if k != "stderr"}))
        assert kill["killed"] or kill["returncode"] == 0, kill["stderr"]
        assert _cache_violations(project) == []
        assert _workspace_violations(project) == []
    mid_file = [k for k in kills if any(size > 0 for size in k["partial_files"].values())]
    assert mid_file, f"no kill caught a file half-copied: {kills}"

    plain = _dvc(project.root, "pull")
    if plain.returncode != 0:
        # DVC refuses to delete the partial copies inside the output it has not saved itself;
        # they are the only files it may name, and --force is then the documented way on.
        named = [line.strip() for line in plain.stderr.splitlines() if line.strip().startswith("/")]
        assert "unsaved files" in plain.stderr, plain.stderr
        assert named, plain.stderr
        assert all(PARTIAL.match(Path(name).name) for name in named), plain.stderr
        _ok(project.root, "pull", "--force")

    restored = {str(p.relative_to(project.out)): _digest(p, "sha256") for p in _files(project.out)}
    assert restored == project.sha256
    assert _cache_violations(project) == []
    assert "up to date" in _ok(project.root, "status").lower()

    cache_partials = _partials(project.cache)
    print(
        f"plain pull after the kills: exit {plain.returncode}; partial copies left in the cache: "
        f"{len(cache_partials)} ({sum(_size(p) for p in cache_partials)} bytes)"
    )
    _ok(project.root, "gc", "--workspace", "--force")  # the documented clean-up
    assert _partials(project.root) == set()
    assert "up to date" in _ok(project.root, "status").lower()


def _corrupt_remote_object(project: Project, name: str) -> tuple[Path, bytes]:
    """Flip three bytes of ``name``'s object in the remote; its path and original bytes."""
    stored = project.remote_object(name)
    original = stored.read_bytes()
    stored.chmod(0o644)
    flipped = bytearray(original)
    for offset in (1000, len(flipped) // 2, len(flipped) - 1):
        flipped[offset] ^= 0xFF
    stored.write_bytes(bytes(flipped))
    return stored, original


def test_corrupt_object_in_the_remote_is_refused(tmp_path: Path, vesselnn_dir: Path) -> None:
    project = _pushed_project(tmp_path, vesselnn_dir, large_bytes=0)
    victim = "labels/santos2015_lowContrastVessels_labelsMarc.tif"
    stored, original = _corrupt_remote_object(project, victim)

    refused = _dvc(project.root, "pull")
    assert refused.returncode != 0
    assert "Checkout failed" in refused.stderr
    assert "data/vesselnn" in refused.stderr
    assert _cache_violations(project) == []
    assert _files(project.out) == []  # no half dataset: none of the output is checked out
    oid = project.md5[victim]
    assert not (project.cache / "files" / "md5" / oid[:2] / oid[2:]).exists()
    verbose = _dvc(project.root, "pull", "-v")
    assert f"corrupted cache file '{project.cache}" in verbose.stdout + verbose.stderr

    stored.write_bytes(original)  # the object pushed again from an intact copy
    _ok(project.root, "pull")
    restored = {str(p.relative_to(project.out)): _digest(p, "sha256") for p in _files(project.out)}
    assert restored == project.sha256
