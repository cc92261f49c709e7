"""Each extra of the package holds what its service imports: installed alone into a fresh venv,
the service's modules import and its console script starts far enough to print its help or
its settings error (never an ImportError)."""

from __future__ import annotations

import subprocess
import sys
import venv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

# extra → the modules its service imports at start (every module of the service, so a lazy
# import deep inside counts too)
SERVICES = {
    "api": ["athenic.api"],
    "orchestrator": ["athenic.orchestrator"],
    "operator": ["athenic_operator"],
}
# modules every extra must import without any extra: the contracts and the CLI
BASE = ["athenic.shared", "athenic.cli", "athenic.cli_quotas"]

IMPORT_ALL = """
import importlib, pkgutil, sys
for root in sys.argv[1:]:
    package = importlib.import_module(root)
    for info in pkgutil.walk_packages(getattr(package, "__path__", []), prefix=root + "."):
        if ".sandbox_python." in info.name or info.name.endswith(".sandbox_python"):
            continue  # runs inside the sandbox's own Python environment, not the services'
        importlib.import_module(info.name)
print("imported", *sys.argv[1:])
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
                   check=True, timeout=300, capture_output=True)
    (built,) = out.glob("athenic-*.whl")
    return built


def _install(extra: str, wheel: Path, where: Path) -> Path:
    venv.EnvBuilder(with_pip=True).create(where)
    python = where / "bin" / "python"
    spec = f"athenic[{extra}] @ {wheel.as_uri()}" if extra else f"athenic @ {wheel.as_uri()}"
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", spec],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return python


@pytest.fixture(scope="module")
def venvs(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("venvs")
    extras = ["", *SERVICES]
    with ThreadPoolExecutor(len(extras)) as pool:
        pythons = pool.map(lambda extra: _install(extra, wheel, base / (extra or "base")), extras)
        return dict(zip(extras, pythons, strict=True))


def _imports(python: Path, modules: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-c", IMPORT_ALL, *modules], capture_output=True, text=True,
                          timeout=120, cwd=python.parents[2])


def test_the_base_install_imports_the_contracts_and_the_cli(venvs: dict[str, Path]) -> None:
    done = _imports(venvs[""], BASE)
    assert done.returncode == 0, done.stderr[-3000:]
    quotas = subprocess.run([str(venvs[""].parent / "athenic"), "quotas", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert quotas.returncode == 0, quotas.stderr
    assert "apply" in quotas.stdout


@pytest.mark.parametrize("extra", sorted(SERVICES))
def test_each_extra_alone_imports_its_service(venvs: dict[str, Path], extra: str) -> None:
    done = _imports(venvs[extra], [*BASE, *SERVICES[extra]])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("imported")


def test_an_extra_without_its_service_libraries_says_so(venvs: dict[str, Path]) -> None:
    """The check above can fail: the api's modules do not import on the operator's extra."""
    done = _imports(venvs["operator"], SERVICES["api"])
    assert done.returncode != 0
    assert "ModuleNotFoundError" in done.stderr
