"""checkov (the platform teams' Kubernetes scanner) for the chart tests, in a venv of its own.

checkov brings a hundred-odd dependencies that must not mix with the services' own, so it is
installed from PyPI into ``.tools/checkov`` (git-ignored), never into ``.venv``. Idempotent:
a checkov that answers ``--version`` with the pinned version is kept.

    .venv/bin/python -m tests.support.checkov      # prints the path of a working checkov
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.helm import REPO_ROOT

# Pinned: a new checkov brings new checks (a change of version is a deliberate bump).
CHECKOV_VERSION = "3.3.30"
CHECKOV_VENV = REPO_ROOT / ".tools" / "checkov"
CHECKOV = CHECKOV_VENV / "bin" / "checkov"
INSTALL_SECONDS = 1200


class CheckovUnavailableError(RuntimeError):
    """checkov could not be installed; the message says what failed."""


def _version() -> str | None:
    try:
        done = subprocess.run([str(CHECKOV), "--version"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_checkov() -> Path:
    if _version() == CHECKOV_VERSION:
        return CHECKOV
    steps = [[sys.executable, "-m", "venv", "--clear", str(CHECKOV_VENV)],
             [str(CHECKOV_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet",
              f"checkov=={CHECKOV_VERSION}"]]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=INSTALL_SECONDS)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CheckovUnavailableError(f"{' '.join(step)}: {exc}") from exc
        if done.returncode != 0:
            raise CheckovUnavailableError(f"{' '.join(step)} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    found = _version()
    if found != CHECKOV_VERSION:
        raise CheckovUnavailableError(f"installed checkov answers {found!r}, not {CHECKOV_VERSION}")
    return CHECKOV


def scan(checkov: Path, folder: Path) -> dict[str, Any]:
    """checkov's Kubernetes checks over the manifests in ``folder``: its JSON report's results."""
    done = subprocess.run([str(checkov), "--directory", str(folder), "--framework", "kubernetes", "--compact",
                           "--output", "json", "--skip-download"],
                          capture_output=True, text=True, timeout=600)
    if not done.stdout.strip():
        raise RuntimeError(f"checkov printed no report (exit {done.returncode}): {done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    if isinstance(report, list):  # one report per framework
        [report] = [r for r in report if r.get("check_type") == "kubernetes"]
    return report  # type: ignore[no-any-return]


def main() -> int:
    try:
        print(ensure_checkov())
    except CheckovUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
