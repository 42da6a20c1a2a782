"""Refuse commits that contain credentials: private keys, cloud and service tokens, passwords.

Usage: ``python .ci/secret_scan.py [FILE ...]`` (default: every file git tracks). Prints one line
per finding (``path:line: kind``, never the secret itself) and exits with 1 if there is any.
A line that really must hold such text can end with ``# secret-scan: allow``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PATTERNS = {
    "private key": re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |PGP |ENCRYPTED )?PRIVATE KEY"),
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "PyPI token": re.compile(r"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{20,}"),
    "credentials in a URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:[^/\s@'\"$]{6,}@"),
    "hard-coded password": re.compile(
        r"(?i)\b(?:password|passwd|secret_key|api_key|access_key|token)\b\s*[:=]\s*"
        r"['\"](?![$<{]|change-?me|example|dummy|test|x+['\"])[^'\"\s]{12,}['\"]"
    ),
}
ALLOW = "secret-scan: allow"
_MAX_BYTES = 2 * 2**20


def scan_text(text: str) -> list[tuple[int, str]]:
    """``(line number, kind)`` of each suspected secret in ``text``."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        if ALLOW in line:
            continue
        found.extend((number, kind) for kind, pattern in PATTERNS.items() if pattern.search(line))
    return found


def _tracked_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], capture_output=True, check=True, text=True
    ).stdout
    return [Path(name) for name in listed.split("\0") if name]


def main(argv: list[str]) -> int:
    """Scan the given files (or all tracked files); return the exit code."""
    files = [Path(a) for a in argv] or _tracked_files()
    findings = 0
    for path in files:
        if not path.is_file() or path.stat().st_size > _MAX_BYTES:
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:  # binary
            continue
        for number, kind in scan_text(data.decode("utf-8", "replace")):
            print(f"{path}:{number}: possible {kind}")
            findings += 1
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
