"""The docs describe what exists: every route and every setting is documented, and every route
and setting the docs name exists (a rename or a removal fails here until the docs follow)."""

from __future__ import annotations

import importlib
import pkgutil
import re

import msgspec
import pytest
from litestar import Litestar

from athenic.api.app import create_app
from athenic.api.settings import ApiSettings
from athenic.shared import names
from athenic.shared.settings import EnvSettings, NatsSettings
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.unit

ROOT = REPO_ROOT
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "charts/athenic/README.md"]
# Variables the docs name that are not service settings: the CLI's own, the SDKs' (read by
# e2b / openai themselves), the chart's pod metadata, and the sandbox's Python environment.
NOT_SETTINGS = {"ATHENIC_URL", "ATHENIC_TOKEN", "ATHENIC_TEST_TOKEN_FILE"}  # the CLI's, the helm test pod's
ROUTE_RE = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/api/[^` ?\[]*)")
SETTING_RE = re.compile(r"\b((?:ATHENIC|NATS|API|LOG)_[A-Z0-9_]*[A-Z0-9])\b")


def _text() -> str:
    return "\n".join(path.read_text() for path in DOCS)


def _settings_classes() -> list[type[EnvSettings]]:
    for root in ("athenic", "athenic_operator"):
        package = importlib.import_module(root)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{root}."):
            if "sandbox_python" not in info.name and info.name.endswith("settings"):
                importlib.import_module(info.name)
    found: list[type[EnvSettings]] = []
    pending = [EnvSettings]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            found.append(sub)
            pending.append(sub)
    return found


def _settings() -> set[str]:
    return {field.encode_name for cls in _settings_classes() for field in msgspec.structs.fields(cls)}


def _app() -> Litestar:
    return create_app(ApiSettings(), NatsSettings())


def _normalise(path: str) -> str:
    """`/api/chat/{client_id:str}` and `/api/chat/{clientId}` are the same route."""
    return re.sub(r"\{[^}]*\}", "{}", path.rstrip("/"))


def _routes(app: Litestar) -> set[tuple[str, str]]:
    routes: set[tuple[str, str]] = set()
    for route in app.routes:
        if not route.path.startswith("/api/"):
            continue
        methods = getattr(route, "methods", None) or {"GET"}  # a WebSocket opens with a GET
        for method in methods - {"HEAD", "OPTIONS"}:
            routes.add((method, _normalise(route.path)))
    return routes


def test_every_setting_is_documented() -> None:
    text = _text()
    missing = sorted(name for name in _settings() if f"`{name}`" not in text and f"{name}`" not in text)
    assert not missing, f"settings no page documents: {missing}"


def test_every_setting_the_docs_name_exists() -> None:
    known = _settings() | NOT_SETTINGS | {value for value in vars(names).values() if isinstance(value, str)}
    named = set(SETTING_RE.findall(_text()))
    unknown = sorted(name for name in named if name not in known and not name.endswith("_"))
    assert not unknown, f"the docs name settings no service reads: {unknown}"


def test_every_route_is_documented() -> None:
    documented = {(method, _normalise(path)) for method, path in ROUTE_RE.findall(_text())}
    missing = sorted(route for route in _routes(_app()) if route not in documented)
    assert not missing, f"routes no page documents (write them as `METHOD /path`): {missing}"


def test_every_route_the_docs_name_exists() -> None:
    routes = _routes(_app())
    named = {(method, _normalise(path)) for method, path in ROUTE_RE.findall(_text())}
    unknown = sorted(route for route in named if route not in routes)
    assert not unknown, f"the docs name routes the api does not serve: {unknown}"


@pytest.mark.parametrize("page", [path.relative_to(ROOT).as_posix() for path in DOCS])
def test_links_between_pages_resolve(page: str) -> None:
    path = ROOT / page
    broken = [target for target in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", path.read_text())
              if not (path.parent / target).exists()]
    assert not broken, f"{page} links to files that do not exist: {broken}"


TEST_PATH_RE = re.compile(r"`(tests/[\w./-]*?)(?:::(\w+))?[`\[]")


def test_every_test_path_the_docs_name_exists() -> None:
    """A test moved or renamed (tests/ follows the source) takes the docs that cite it along."""
    missing = []
    for path, test in TEST_PATH_RE.findall(_text()):
        target = ROOT / path
        if not target.exists():
            missing.append(path)
        elif test and not re.search(rf"^(async )?def {test}\(", target.read_text(), re.MULTILINE):
            missing.append(f"{path}::{test}")
    assert not missing, f"the docs name tests that do not exist: {sorted(set(missing))}"
