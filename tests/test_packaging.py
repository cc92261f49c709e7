"""Each extra of the package holds what its service imports.

For each extra, the dependency closure that ``pip install athenic[extra]`` would install is
computed from ``pyproject.toml`` and the installed distributions' own metadata; only those
distributions' files are linked into an empty folder, and a Python started without
site-packages imports every module of the service from there. A module that imports a
library its extra does not pull in fails with ``ModuleNotFoundError``."""

from __future__ import annotations

import importlib.metadata as metadata
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.unit

ROOT = REPO_ROOT
SOURCES = [ROOT / "services", ROOT / "operator"]

# extra → the packages of its service (every module in them is imported)
SERVICES = {"api": ["athenic.api"], "orchestrator": ["athenic.orchestrator"], "operator": ["athenic_operator"],
            "notifier": ["athenic.notifier"]}
# what the base install alone must import: the contracts and the CLI
BASE = ["athenic.shared", "athenic.cli", "athenic.cli_quotas"]

IMPORT_ALL = """
import importlib, pkgutil, sys
sys.path[:0] = sys.argv[1].split(":")
for root in sys.argv[2:]:
    package = importlib.import_module(root)
    for info in pkgutil.walk_packages(getattr(package, "__path__", []), prefix=root + "."):
        if "sandbox_python" in info.name:
            continue  # runs inside the sandbox's own Python environment, not the services'
        importlib.import_module(info.name)
print("imported", *sys.argv[2:])
"""


def _project_requirements(extra: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *(project["optional-dependencies"].get(extra, []) if extra else [])]
    return [Requirement(text) for text in wanted]


def _closure(requirements: list[Requirement]) -> set[str]:
    """The distributions pip would install for ``requirements`` (markers for this interpreter)."""
    seen: set[str] = set()
    pending = [(req, "") for req in requirements]
    while pending:
        req, extra = pending.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        if name == "athenic":
            continue
        dist = metadata.distribution(name)  # installed: the dev venv holds every extra
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        for text in dist.requires or []:
            child = Requirement(text)
            for chosen in sorted(req.extras) or [""]:
                pending.append((child, chosen))
    return {key.split("[")[0] for key in seen}


def _link(distributions: set[str], into: Path) -> None:
    """Link every file of ``distributions`` into ``into``, as an install would lay them out."""
    for name in distributions:
        dist = metadata.distribution(name)
        for file in dist.files or []:
            source = Path(str(dist.locate_file(file))).resolve()
            if file.parts[0] in ("..", "bin") or not source.is_file():
                continue
            target = into / file
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                os.symlink(source, target)


def _imports(extra: str, modules: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    site = tmp_path / (extra or "base")
    site.mkdir()
    _link(_closure(_project_requirements(extra)), site)
    path = ":".join(str(p) for p in [site, *SOURCES])
    # -I -S: no site-packages, no PYTHON* variables, no user site: only what was linked
    return subprocess.run([sys.executable, "-I", "-S", "-c", IMPORT_ALL, path, *modules],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)


def test_the_base_install_imports_the_contracts_and_the_cli(tmp_path: Path) -> None:
    done = _imports("", BASE, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("extra", sorted(SERVICES))
def test_each_extra_alone_imports_its_service(extra: str, tmp_path: Path) -> None:
    done = _imports(extra, [*BASE, *SERVICES[extra]], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("imported")


def test_a_service_on_another_extra_is_missing_its_libraries(tmp_path: Path) -> None:
    """The check can fail: the api's modules do not import with the operator's extra alone."""
    done = _imports("operator", SERVICES["api"], tmp_path)
    assert done.returncode != 0
    assert "ModuleNotFoundError" in done.stderr
