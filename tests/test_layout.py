"""The test tree's own rules: folders follow the source, every module says its kind by marker.

A folder says which part a test is about (``tests/api``, ``tests/orchestrator/sandbox``...),
a marker what kind of test it is (``unit``, ``integration``, ``e2e``, ``drill``); see
docs/testing.md. Read from the files themselves (``ast``), so a new module that breaks a rule
fails here by name.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.unit

TESTS = REPO_ROOT / "tests"
KINDS = ("unit", "integration", "e2e", "drill")
# Each component folder and the source it mirrors; its sub-folders name a module or package there.
COMPONENTS = {
    "shared": REPO_ROOT / "services/athenic/shared",
    "api": REPO_ROOT / "services/athenic/api",
    "orchestrator": REPO_ROOT / "services/athenic/orchestrator",
    "notifier": REPO_ROOT / "services/athenic/notifier",
    "operator": REPO_ROOT / "operator/athenic_operator",
    "chart": REPO_ROOT / "charts/athenic",
    "cli": REPO_ROOT / "services/athenic",
}
# Folders that are not a component: the whole system, the failure drills, the shared support.
WHOLE = {"e2e": "e2e", "drills": "drill"}
SUPPORT = "support"
# What a unit test must not start: a broker, a service process, a stand-in server, a cluster.
PROCESS_FIXTURES = {"nats_server", "nats_url", "system_nats", "api", "client", "spawned", "emulator", "cluster",
                    "operators", "buckets", "standin", "e2b", "broker"}
PROCESS_MODULES = {"tests.support.nats", "tests.support.services", "tests.support.cluster",
                   "tests.support.e2b_standin", "tests.support.e2b_thread", "tests.support.openai_standin",
                   "tests.support.fcm_standin", "tests.support.apns_standin", "tests.support.webhook_receiver",
                   "tests.support.asgi_thread", "tests.support.kubernetes"}


def all_test_modules() -> list[Path]:
    return sorted(path for path in TESTS.rglob("test_*.py") if SUPPORT not in path.relative_to(TESTS).parts)


def relative(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def module_kinds(tree: ast.Module) -> list[str] | None:
    """The kind markers of the module-level ``pytestmark`` (None when there is none)."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets):
            marks = node.value.elts if isinstance(node.value, ast.List | ast.Tuple) else [node.value]
            return [mark.attr for mark in marks
                    if isinstance(mark, ast.Attribute) and mark.attr in KINDS
                    and isinstance(mark.value, ast.Attribute) and mark.value.attr == "mark"]
    return None


def kinds_by_module() -> dict[str, list[str] | None]:
    return {relative(path): module_kinds(ast.parse(path.read_text())) for path in all_test_modules()}


def test_the_kinds_are_registered_markers_with_a_description() -> None:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    registered = dict(line.split(":", 1) for line in config["markers"])
    for kind in KINDS:
        assert registered.get(kind, "").strip(), f"marker {kind!r} is not registered with a description in pyproject"
    assert "--strict-markers" in config["addopts"], "an unregistered (misspelt) marker must fail the run"


def test_every_test_module_has_exactly_one_kind() -> None:
    unmarked = [path for path, kinds in kinds_by_module().items() if not kinds]
    several = {path: kinds for path, kinds in kinds_by_module().items() if kinds and len(kinds) > 1}
    assert not unmarked, f"modules without a kind: add `pytestmark = pytest.mark.<{'|'.join(KINDS)}>`: {unmarked}"
    assert not several, f"modules with more than one kind: {several}"


def test_whole_system_folders_hold_their_kind_and_only_they_do() -> None:
    wrong = []
    for path, kinds in kinds_by_module().items():
        folder = Path(path).parts[1]
        if folder in WHOLE and kinds != [WHOLE[folder]]:
            wrong.append(f"{path} is in tests/{folder}/ but marked {kinds}")
        if folder not in WHOLE and kinds and kinds[0] in WHOLE.values():
            wrong.append(f"{path} is marked {kinds[0]} but lives outside {sorted(WHOLE)}")
    assert not wrong, wrong


def test_folders_follow_the_source() -> None:
    wrong = []
    for path in all_test_modules():
        parts = path.relative_to(TESTS).parts[:-1]
        if not parts:
            continue  # the tree's own checks (docs, packaging, this module)
        top, rest = parts[0], parts[1:]
        if top in WHOLE:
            continue
        if top not in COMPONENTS:
            wrong.append(f"{relative(path)}: tests/{top}/ mirrors no part (known: {sorted(COMPONENTS)})")
            continue
        source = COMPONENTS[top]
        for name in rest:
            if not ((source / name).is_dir() or (source / f"{name}.py").is_file()):
                wrong.append(f"{relative(path)}: {relative(source)} has no module or package {name!r}")
                break
            source = source / name
    assert not wrong, wrong


def test_every_test_folder_is_a_package() -> None:
    # test modules of the same name in two folders (test_record_budget.py) import as tests.<folder>.<name>
    missing = sorted({relative(path.parent) for path in all_test_modules()
                      if not (path.parent / "__init__.py").exists()})
    assert not missing, f"folders without an __init__.py: {missing}"


def _requested_fixtures(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.update(arg.arg for arg in node.args.args)
    return names


def _imported_modules(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("path", [p for p, kinds in kinds_by_module().items() if kinds == ["unit"]])
def test_a_unit_module_starts_no_server(path: str) -> None:
    """A test that needs a real nats-server, a service or a stand-in is integration, not unit."""
    tree = ast.parse((REPO_ROOT / path).read_text())
    fixtures = sorted(_requested_fixtures(tree) & PROCESS_FIXTURES)
    modules = sorted(_imported_modules(tree) & PROCESS_MODULES)
    assert not fixtures and not modules, f"{path} is marked unit but uses {fixtures + modules}: mark it integration"


def _product_classes() -> set[str]:
    found: set[str] = set()
    for root in ("services", "operator"):
        for path in (REPO_ROOT / root).rglob("*.py"):
            found.update(node.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ClassDef))
    return found


def test_no_test_side_class_shadows_a_product_class() -> None:
    """A test's own ``Broker`` next to the product's reads as the product's: they are named apart."""
    product = _product_classes()
    shadows = [f"{relative(path)}: {node.name}"
               for path in sorted(TESTS.rglob("*.py"))
               for node in ast.parse(path.read_text()).body
               if isinstance(node, ast.ClassDef) and node.name in product]
    assert not shadows, f"test-side classes named like the product's: {shadows}"


def test_no_module_imports_from_a_conftest() -> None:
    """A conftest holds fixtures, which pytest finds by name; what tests import sits in a module beside it."""
    importing = sorted(relative(path) for path in TESTS.rglob("*.py")
                       if any(module.endswith(".conftest") or module == "conftest"
                              for module in _imported_modules(ast.parse(path.read_text()))))
    assert not importing, f"modules importing from a conftest: {importing}"
