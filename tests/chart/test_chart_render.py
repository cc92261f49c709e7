"""The chart as a package: `helm lint --strict` and manifests valid for every Kubernetes version
it supports, for every value set; the CRDs it ships; `helm package` leaves nothing out."""

from __future__ import annotations

import functools
import re
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import kubernetes_validate
import kubernetes_validate.utils as kv_utils
import pytest
import yaml

from tests.chart.manifests import (
    Manifest,
    of_kind,
)
from tests.chart.value_sets import KUBE_VERSION, VALUE_SETS
from tests.support.helm import CHART_DIR, parse_manifests, template_args

pytestmark = pytest.mark.unit

Render = Callable[..., list[Manifest]]


ALL_SETS = list(VALUE_SETS)


# kinds served by CRDs (ours, kopf's, the Prometheus Operator's): no built-in schema for them
CUSTOM_KINDS = {"ClusterKopfPeering", "KopfPeering", "ServiceMonitor"}


def minor(version: str) -> str:
    return ".".join(re.findall(r"\d+", version)[:2])


# the chart's minimum (Chart.yaml kubeVersion), the version rendered for, the newest known
CHART_MINIMUM = minor(yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["kubeVersion"])


VALIDATE_VERSIONS = sorted({CHART_MINIMUM, minor(KUBE_VERSION), minor(kubernetes_validate.latest_version())},
                           key=lambda v: tuple(map(int, v.split("."))))


@pytest.fixture(scope="module")
def schemas_cached() -> Iterator[None]:
    """kubernetes-validate re-reads its 1.4 MB definitions file for every object: read each once."""
    original = kv_utils.schema_contents
    kv_utils.schema_contents = functools.lru_cache(maxsize=None)(original)
    try:
        yield
    finally:
        kv_utils.schema_contents = original


@pytest.mark.parametrize("value_set", ALL_SETS)
def test_lint_strict(helm_run: Callable[[list[str]], str], values_files: Callable[[str], list[Path]],
                     value_set: str) -> None:
    args = ["lint", "--strict", str(CHART_DIR), "--kube-version", KUBE_VERSION]
    for path in values_files(value_set):
        args += ["--values", str(path)]
    out = helm_run(args)
    assert "0 chart(s) failed" in out


@pytest.mark.usefixtures("schemas_cached")
@pytest.mark.parametrize("value_set", ALL_SETS)
def test_manifests_valid_for_kubernetes(render: Render, value_set: str) -> None:
    manifests = render(value_set)
    assert manifests, "nothing rendered"
    for version in VALIDATE_VERSIONS:
        validated: set[str] = set()
        for manifest in manifests:
            where = f"{manifest['kind']}/{manifest['metadata']['name']}"
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                assert manifest["kind"] in CUSTOM_KINDS, f"{where}: no Kubernetes {version} schema for this kind"
                continue
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{value_set}: {where} invalid for Kubernetes {version} at "
                            f"{'.'.join(map(str, exc.path))}: {exc.message}")
            validated.add(manifest["kind"])
        assert {"Deployment", "Service", "NetworkPolicy", "CustomResourceDefinition"} <= validated
        assert {"Role", "ClusterRole"} & validated  # the operator's (test_operator_rbac.py)


def test_crds_ship_with_the_chart(render: Render) -> None:
    crds = {m["metadata"]["name"]: m for m in of_kind(render("defaults"), "CustomResourceDefinition")}
    assert "sandboxquotas.athenic.dev" in crds, "charts/athenic/crds/sandboxquotas.athenic.dev.yaml missing"
    quota = crds["sandboxquotas.athenic.dev"]["spec"]
    assert quota["scope"] == "Namespaced"
    assert quota["names"]["shortNames"] == ["sbq"]
    version = next(v for v in quota["versions"] if v["name"] == "v1alpha1")
    assert version["subresources"] == {"status": {}}
    assert crds["clusterkopfpeerings.kopf.dev"]["spec"]["scope"] == "Cluster"
    assert crds["kopfpeerings.kopf.dev"]["spec"]["scope"] == "Namespaced"
    # CRDs live in crds/ (installed first, never deleted by `helm uninstall`), not in templates
    assert not of_kind(render("defaults", include_crds=False), "CustomResourceDefinition")


def test_packaged_chart_is_complete(helm_run: Callable[[list[str]], str], tmp_path: Path) -> None:
    """What a platform team pulls from a chart repository: `helm package` output, installable alone."""
    out = helm_run(["package", str(CHART_DIR), "--destination", str(tmp_path)])
    (package,) = tmp_path.glob("athenic-*.tgz")
    assert str(package) in out
    with tarfile.open(package) as tar:
        names = set(tar.getnames())
    for needed in ("Chart.yaml", "values.yaml", "values.schema.json", "templates/NOTES.txt",
                   "templates/tests/test-chat.yaml", "files/smoke_test.py",
                   "crds/sandboxquotas.athenic.dev.yaml", "crds/kopf.dev_clusterkopfpeerings.yaml"):
        assert f"athenic/{needed}" in names, needed
    args = template_args(kube_version=KUBE_VERSION, chart=package)
    rendered = parse_manifests(helm_run(args))
    assert {m["metadata"]["name"] for m in of_kind(rendered, "Deployment")} == {
        "athenic-api", "athenic-orchestrator", "athenic-operator", "athenic-notifier"}
