"""``minivess data pull`` against a temporary git+DVC project with a local remote.

The project is the one of ``test_dvc_faults.py`` (the repository's ``.dvc/config`` with its
``local`` remote pointed at a temporary folder, the real VesselNN files as one directory output).
``minivess data pull`` runs as a real subprocess; the kill test SIGKILLs its process group at
seeded shares of the bytes it has to write, as ``test_dvc_faults.py`` does to ``dvc pull``.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tests.v2.integration.processes import free_port
from tests.v2.integration.test_dvc_faults import (
    BIN,
    KILLS,
    LARGE_BYTES,
    SEED,
    Project,
    _cache_violations,
    _corrupt_remote_object,
    _digest,
    _env,
    _files,
    _ok,
    _partials,
    _pull_and_kill,
    _pushed_project,
    _size,
    _workspace_violations,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CORRUPT_VICTIM = "labels/santos2015_lowContrastVessels_labelsMarc.tif"


def _pull_command(*args: str) -> list[str]:
    return [str(BIN / "minivess"), "data", "pull", *args]


def _pull(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        _pull_command(*args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env or _env(),
        check=False,
    )


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    """The single ``error:`` line of a failed command (exit 2, nothing else on stderr)."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    return lines[0]


def _sha256(project: Project) -> dict[str, str]:
    return {str(p.relative_to(project.out)): _digest(p, "sha256") for p in _files(project.out)}


def test_pull_resumes_after_kills_without_force(tmp_path: Path, vesselnn_dir: Path) -> None:
    project = _pushed_project(tmp_path, vesselnn_dir, LARGE_BYTES)
    to_write = 2 * project.data_bytes  # every file lands in the cache and in the workspace
    rng = np.random.default_rng(SEED)
    cache_partials = []
    for share in sorted(rng.uniform(0.02, 0.98, size=KILLS)):
        earlier = _partials(project.root)
        kill = _pull_and_kill(project, int(share * to_write), _pull_command())
        print({k: v for k, v in kill.items() if k != "stderr"})
        assert kill["killed"] or kill["returncode"] == 0, kill["stderr"]
        # Each run removes the partial copies of the one before it, before writing anything.
        assert earlier & _partials(project.root) == set()
        assert _cache_violations(project) == []
        assert _workspace_violations(project) == []
        cache_partials.extend((p, _size(p)) for p in _partials(project.cache))
    assert cache_partials, "no kill caught a file half-fetched into the cache"
    cache_bytes = sum(size for _, size in cache_partials)
    print(f"cache partials after the kills: {len(cache_partials)}, {cache_bytes} bytes")

    # The case plain `dvc pull` refuses without --force (test_dvc_faults.py): DVC's partial
    # copies inside the output folder, and more of them in the cache.
    left = _partials(project.root)
    assert _partials(project.out), f"the last kill left no partial copy in the output: {left}"
    left_bytes = sum(_size(p) for p in left)

    resumed = _pull(project.root)
    assert resumed.returncode == 0, resumed.stderr
    print(resumed.stderr)
    assert f"removed {len(left)} partial copies" in resumed.stderr
    assert f"({left_bytes} bytes)" in resumed.stderr
    assert f"verified {len(project.sha256)} files ({project.data_bytes} bytes)" in resumed.stderr
    assert _sha256(project) == project.sha256
    assert _partials(project.root) == set()
    assert _cache_violations(project) == []
    assert "up to date" in _ok(project.root, "status").lower()


def test_corrupt_remote_object_is_named_and_nothing_is_checked_out(
    tmp_path: Path, vesselnn_dir: Path
) -> None:
    project = _pushed_project(tmp_path, vesselnn_dir, large_bytes=0)
    stored, original = _corrupt_remote_object(project, CORRUPT_VICTIM)

    error = _one_line_error(_pull(project.root))
    assert f"data/vesselnn/{CORRUPT_VICTIM}: [corrupt-remote-object]" in error
    assert f"remote local ({project.remote})" in error
    assert "push it again from an intact copy" in error
    assert _files(project.out) == []  # no half dataset
    assert _cache_violations(project) == []

    stored.write_bytes(original)  # the fix the message gives: the object pushed again
    assert _pull(project.root).returncode == 0
    assert _sha256(project) == project.sha256


def test_no_remote_configured_says_how_to_set_one(tmp_path: Path, vesselnn_dir: Path) -> None:
    project = _pushed_project(tmp_path, vesselnn_dir, large_bytes=0)
    _ok(project.root, "remote", "default", "--unset")
    env = {k: v for k, v in _env().items() if k != "MINIVESS_DVC__REMOTE"}

    error = _one_line_error(_pull(project.root, env=env))
    assert "no DVC remote to pull from" in error
    assert "`dvc remote add -d NAME URL`" in error
    assert "MINIVESS_DVC__REMOTE=URL" in error
    assert not project.out.exists()

    # One of the fixes the message gives: the remote from the deployment settings.
    fixed = _pull(project.root, env={**env, "MINIVESS_DVC__REMOTE": str(project.remote)})
    assert fixed.returncode == 0, fixed.stderr
    assert "pulled from minivess-settings" in fixed.stderr
    assert _sha256(project) == project.sha256


def test_unreachable_remote(tmp_path: Path, vesselnn_dir: Path) -> None:
    project = _pushed_project(tmp_path, vesselnn_dir, large_bytes=0)
    endpoint = f"http://127.0.0.1:{free_port()}"  # the compose stack's MinIO, not running
    _ok(project.root, "remote", "modify", "--local", "minio", "endpointurl", endpoint)
    env = _env()
    env.update(AWS_ACCESS_KEY_ID="minivess", AWS_SECRET_ACCESS_KEY="minivess-secret")
    env["AWS_MAX_ATTEMPTS"] = "1"  # botocore's retries of a refused connection only add time

    error = _one_line_error(_pull(project.root, "--remote", "minio", env=env))
    assert "[remote-unreachable] cannot read remote minio (s3://minivess-dvc)" in error
    assert f'Could not connect to the endpoint URL: "{endpoint}/' in error
    assert "start the remote or fix its URL, endpoint or credentials" in error
    assert not project.out.exists()


def test_disk_full_while_pulling(tmp_path: Path, vesselnn_dir: Path) -> None:
    """A write failing with a real EFBIG (a lowered RLIMIT_FSIZE stands in for a full disk)."""
    project = _pushed_project(tmp_path, vesselnn_dir, large_bytes=0)

    def _limited_pull(limit: int) -> subprocess.CompletedProcess:
        def lower_file_size_limit() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        return subprocess.run(
            _pull_command(),
            cwd=project.root,
            capture_output=True,
            text=True,
            timeout=300,
            env=_env(),
            check=False,
            preexec_fn=lower_file_size_limit,
        )

    full = _limited_pull(500_000)
    # Whichever write hits the limit first: an object copied into the cache, or DVC's SQLite
    # index of it (which a failed write can leave claiming objects that never arrived).
    error = _one_line_error(full)
    assert "[cannot-write]" in error
    assert re.search(r"(File too large|disk I/O error)\)?: free disk space", error), error
    left = _partials(project.root)

    retried = _pull(project.root)  # one run is enough
    assert retried.returncode == 0, retried.stderr
    assert (f"removed {len(left)} partial copies" in retried.stderr) == bool(left)
    assert _partials(project.root) == set()
    assert _sha256(project) == project.sha256

    # Again with DVC's index already built and a limit just below the largest file (1056248
    # bytes): now its copy into the cache fails.
    shutil.rmtree(project.out)
    shutil.rmtree(project.cache)
    error = _one_line_error(_limited_pull(1_000_000))
    assert "[cannot-write] File too large: free disk space" in error
    left = _partials(project.root)
    assert left, "DVC removed its partial copy itself"
    retried = _pull(project.root)
    assert retried.returncode == 0, retried.stderr
    assert f"removed {len(left)} partial copies" in retried.stderr
    assert _sha256(project) == project.sha256


def test_missing_remote_folder_and_object(tmp_path: Path, vesselnn_dir: Path) -> None:
    project = _pushed_project(tmp_path, vesselnn_dir, large_bytes=0)
    moved = project.remote.with_name("remote-moved")
    project.remote.rename(moved)
    error = _one_line_error(_pull(project.root))
    assert "[remote-missing] the data is missing from remote local" in error
    assert "run `dvc push` where the data is" in error
    assert not project.out.exists()

    moved.rename(project.remote)
    project.remote_object(CORRUPT_VICTIM).unlink()
    error = _one_line_error(_pull(project.root))
    assert f"data/vesselnn/{CORRUPT_VICTIM}: [remote-missing] 1 file(s) missing" in error


def test_damaged_cache_copy_is_caught_and_pulled_again(tmp_path: Path, vesselnn_dir: Path) -> None:
    """Bytes that change on disk after DVC verified them (a crash, a failing disk): DVC trusts
    the file by size and mtime, so only hashing every byte notices."""
    project = _pushed_project(tmp_path, vesselnn_dir, large_bytes=0)
    assert _pull(project.root).returncode == 0
    oid = project.md5[CORRUPT_VICTIM]
    cached = project.cache / "files" / "md5" / oid[:2] / oid[2:]
    stat = cached.stat()
    cached.chmod(0o644)
    damaged = bytearray(cached.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    cached.write_bytes(bytes(damaged))
    os.utime(cached, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    cached.chmod(stat.st_mode)
    (project.out / CORRUPT_VICTIM).unlink()

    unverified = _pull(project.root, "--no-verify")
    assert unverified.returncode == 0, unverified.stderr
    assert _digest(project.out / CORRUPT_VICTIM, "md5") != oid  # DVC checked the damage out
    assert "up to date" in _ok(project.root, "status").lower()  # and does not see it

    verified = _pull(project.root)
    assert verified.returncode == 0, verified.stderr
    assert "pulled again 1 files" in verified.stderr
    assert _sha256(project) == project.sha256
    assert _cache_violations(project) == []


def test_only_dvc_partials_are_removed(tmp_path: Path, vesselnn_dir: Path) -> None:
    """A user's file in an output is never deleted, nor a partial copy in a cache outside the
    repository, which another repository's pull may be writing right now."""
    project = _pushed_project(tmp_path, vesselnn_dir, large_bytes=0)
    shared = tmp_path / "shared-cache"
    _ok(project.root, "cache", "dir", "--local", str(shared))
    in_flight = shared / "files" / "md5" / "ab" / f".{'A' * 22}.tmp"
    in_flight.parent.mkdir(parents=True)
    in_flight.write_bytes(b"x" * 100)
    project.out.mkdir(parents=True)
    stale = project.out / f".{'B' * 22}.tmp"
    stale.write_bytes(b"y" * 50)
    notes = project.out / "notes.tmp"
    notes.write_text("mine")

    error = _one_line_error(_pull(project.root))
    assert f"{notes}: [unsaved-file] is inside a DVC output but not tracked by DVC" in error
    assert notes.read_text() == "mine"
    assert not stale.exists()

    notes.unlink()
    stale.write_bytes(b"y" * 50)
    result = _pull(project.root)
    assert result.returncode == 0, result.stderr
    assert "removed 1 partial copies left by an interrupted pull (50 bytes)" in result.stderr
    assert in_flight.read_bytes() == b"x" * 100
    assert _sha256(project) == project.sha256


def test_not_a_repository_and_nothing_to_pull(tmp_path: Path) -> None:
    error = _one_line_error(_pull(tmp_path))
    assert re.search(r"is not inside a DVC repository: run the command in the project", error)

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    _ok(tmp_path, "init", "-q")
    error = _one_line_error(_pull(tmp_path))
    assert "[nothing-to-pull] no DVC-tracked data" in error


def test_a_running_dvc_process_keeps_its_partial_copies(tmp_path: Path, vesselnn_dir: Path) -> None:
    """While another DVC process holds the repository lock, nothing is deleted or pulled."""
    project = _pushed_project(tmp_path, vesselnn_dir, large_bytes=0)
    project.out.mkdir(parents=True)
    in_flight = project.out / f".{'C' * 22}.tmp"
    in_flight.write_bytes(b"z" * 10)
    holder = subprocess.Popen(
        [
            str(BIN / "python"),
            "-c",
            "import sys; from dvc.repo import Repo\n"
            "with Repo(sys.argv[1]).lock:\n    print('locked', flush=True); sys.stdin.read()",
            str(project.root),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        error = _one_line_error(_pull(project.root))
        assert f"another DVC process holds the lock of {project.root}" in error
        assert in_flight.read_bytes() == b"z" * 10
    finally:
        holder.communicate(timeout=60)
    assert _pull(project.root).returncode == 0
    assert not in_flight.exists()
    assert _sha256(project) == project.sha256
