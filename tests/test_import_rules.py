"""The import rules of DESIGN.md, read from the source: imports follow the data.

The api and the orchestrator never import each other; the notifier imports neither; the
operator imports only the shared contracts of the services; the shared contracts import no
service. (Modules beside the services — the CLI, the health server — are not services.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "athenic.api": ROOT / "services/athenic/api",
    "athenic.orchestrator": ROOT / "services/athenic/orchestrator",
    "athenic.notifier": ROOT / "services/athenic/notifier",
    "athenic.shared": ROOT / "services/athenic/shared",
    "athenic_operator": ROOT / "operator/athenic_operator",
}
SERVICES = ("athenic.api", "athenic.orchestrator", "athenic.notifier")
# what each package may not import
FORBIDDEN = {
    "athenic.api": ("athenic.orchestrator", "athenic.notifier"),
    "athenic.orchestrator": ("athenic.api", "athenic.notifier"),
    "athenic.notifier": ("athenic.api", "athenic.orchestrator"),
    "athenic.shared": (*SERVICES, "athenic.cli", "athenic.cli_quotas", "athenic.health_server", "athenic_operator"),
    "athenic_operator": (*SERVICES, "athenic.cli", "athenic.cli_quotas", "athenic.health_server"),
}


def imported(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def violations(package: str) -> list[str]:
    bad = []
    for path in sorted(PACKAGES[package].rglob("*.py")):
        for name in sorted(imported(path)):
            if any(name == other or name.startswith(f"{other}.") for other in FORBIDDEN[package]):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    return bad


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_a_package_imports_only_what_the_rules_allow(package: str) -> None:
    assert PACKAGES[package].is_dir()
    assert violations(package) == []


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("from athenic.orchestrator.worker import Worker\nimport athenic.api.app\n")
    names = imported(module)
    assert "athenic.orchestrator.worker.Worker" in names and "athenic.api.app" in names
