"""The container image, checked statically (no container engine on this machine): what it
is built from, what it copies, who it runs as, and that it fits the chart that runs it."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable

import pytest
import yaml

from tests.chart.dockerfile import copy_sources, dockerignore_excludes, parse_dockerfile
from tests.chart.manifests import Manifest, container, env_value, of_kind, pod_specs
from tests.support.helm import CHART_DIR, REPO_ROOT

pytestmark = pytest.mark.unit

DOCKERFILE = parse_dockerfile(REPO_ROOT / "Dockerfile")
IGNORE = (REPO_ROOT / ".dockerignore").read_text()
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
BUILD_TOOLS = ("build-essential", "gcc", "g++", "make", "git", "curl", "wget", "python3-dev", "pip install")


def test_base_images_are_pinned_python_311_slim_bookworm() -> None:
    stage_names = {s.name for s in DOCKERFILE.stages}
    for stage in DOCKERFILE.stages:
        base = DOCKERFILE.resolve(stage.base)
        if base in stage_names:
            continue
        # an exact patch version (and optionally a digest): never `latest` or a moving `3.11`
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base


def test_multi_stage_and_runtime_without_build_tools() -> None:
    assert len(DOCKERFILE.stages) >= 2
    runtime = DOCKERFILE.stages[-1]
    assert runtime.name == "runtime"
    runs = " ".join(runtime.all("RUN"))
    for tool in BUILD_TOOLS:
        assert tool not in runs, f"runtime stage installs or runs {tool!r}"
    build = DOCKERFILE.stage("build")
    assert "build-essential" in " ".join(build.all("RUN")), "the compiler belongs in the build stage"
    # the runtime takes the built virtualenvs (the services', the sandbox's), not the sources
    copies = runtime.all("COPY")
    assert copies
    assert all(c.startswith(("--from=build ", "--from=sandbox-python ")) for c in copies), copies


def test_runs_as_the_charts_non_root_uid() -> None:
    users = DOCKERFILE.stages[-1].all("USER")
    assert users, "the runtime stage sets no USER: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), "numeric, so the kubelet can check runAsNonRoot"
    assert int(uid) != 0
    assert gid.isdigit()
    assert int(gid) != 0
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)
    assert values["podSecurityContext"]["runAsGroup"] == int(gid)


def test_copied_sources_exist_and_are_in_the_build_context() -> None:
    sources = [src for stage in DOCKERFILE.stages for args in stage.all("COPY") for src in copy_sources(args)]
    assert sources
    for src in sources:
        path = REPO_ROOT / src.rstrip("/").removeprefix("./")
        assert path.exists(), f"COPY {src}: no such file in the repository"
        assert not dockerignore_excludes(IGNORE, src.rstrip("/")), f"COPY {src}: excluded by .dockerignore"


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    for path in (".venv/bin/python", ".git/config", ".tools/bin/helm", ".athenic/state", ".env",
                 "tests/conftest.py", "charts/athenic/values.yaml", "services/athenic/__pycache__/x.pyc"):
        assert dockerignore_excludes(IGNORE, path), f"{path} would be sent to the builder"
    for path in ("pyproject.toml", "README.md", "services/athenic/__init__.py",
                 "operator/athenic_operator/__init__.py"):
        assert not dockerignore_excludes(IGNORE, path), f"{path} is needed by the build"


def test_image_holds_every_service_the_chart_runs(render: Callable[..., list[Manifest]]) -> None:
    scripts = set(PYPROJECT["project"]["scripts"])
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    installs = " ".join(DOCKERFILE.stage("build").all("RUN"))
    installed_extras = set(re.search(r"\.\[([\w,]+)\]", installs).group(1).split(","))  # type: ignore[union-attr]
    assert installed_extras == {"api", "orchestrator", "operator", "notifier"}
    assert installed_extras <= extras
    commands = set()
    for where, spec in pod_specs(render("defaults")):
        if where.startswith(("Deployment/",)):
            commands.add(spec["containers"][0]["args"][0])  # run by the image's entrypoint (tini)
    assert commands == {"athenic-api", "athenic-orchestrator", "athenic-operator", "athenic-notifier"}
    assert commands <= scripts, f"the chart runs {commands - scripts}, which pyproject does not install"
    # the local sandbox's needs are in the runtime image
    runtime_runs = " ".join(DOCKERFILE.stages[-1].all("RUN"))
    assert "bubblewrap" in runtime_runs
    # Debian's python3 with its whole standard library: numpy and pandas need more than -minimal
    assert re.search(r"\bpython3\b(?!-)", runtime_runs), "the runtime lacks Debian's python3"
    # a minimal init reaps zombies and forwards signals as PID 1
    assert "tini" in runtime_runs
    assert DOCKERFILE.stages[-1].all("ENTRYPOINT") == ['["/usr/bin/tini", "--"]']
    # NATS runs the official image, not ours
    assert any(c["containers"][0]["image"].startswith("nats:") for c in
               (s["spec"]["template"]["spec"] for s in of_kind(render("defaults"), "StatefulSet")))


def test_image_carries_the_sandbox_python_environment_where_the_settings_say(
        render: Callable[..., list[Manifest]]) -> None:
    """The local sandbox's numpy/pandas/matplotlib environment: built by the same script as
    `make sandbox-python`, on Debian's python3, copied to the path it was created at (a venv
    names its own path), and named by both the image's ENV and the chart."""
    stage = DOCKERFILE.stage("sandbox-python")
    runs = " ".join(stage.all("RUN"))
    assert "python3-venv" in runs
    install = re.search(r"sh (\S+/install\.sh) (\S+) (\S+)", runs)
    assert install, "the sandbox-python stage does not run sandbox_python/install.sh"
    target, interpreter = install.group(2), install.group(3)
    assert interpreter == "/usr/bin/python3", "the sandbox runs Debian's python3: the venv must be of it"
    copied = stage.all("COPY")
    assert any(c.startswith("services/athenic/orchestrator/sandbox/sandbox_python/") for c in copied), copied
    runtime = DOCKERFILE.stages[-1]
    assert f"--from=sandbox-python {target} {target}" in runtime.all("COPY")
    image_env = " ".join(runtime.all("ENV"))
    assert f"ATHENIC_SANDBOX_PYTHON_ENV={target}" in image_env
    orchestrator = container(render("local-bubblewrap"), "athenic-orchestrator")
    assert env_value(orchestrator, "ATHENIC_SANDBOX_PYTHON_ENV") == target
    # no build tools in the sandbox's stage either: its packages are all wheels
    assert "build-essential" not in runs
