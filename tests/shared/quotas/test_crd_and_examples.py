"""The CRD as shipped: the chart's copy and the package's copy agree, its schema refuses bad
values, its defaults are the policy defaults, and every example object is valid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from athenic.shared.policy import BUILTIN_DEFAULT
from athenic.shared.quotas import crd_manifest, load_quotas, quota_schema, schema_errors
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.unit

ROOT = REPO_ROOT
CHART_CRD = ROOT / "charts/athenic/crds/sandboxquotas.athenic.dev.yaml"
PACKAGE_CRD = ROOT / "services/athenic/shared/sandboxquotas.athenic.dev.yaml"
EXAMPLES = sorted((ROOT / "examples/quotas").glob("*.yaml"))


def quota(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "athenic.dev/v1alpha1", "kind": "SandboxQuota",
            "metadata": {"name": "q"}, "spec": spec}


def test_package_copy_is_the_chart_crd() -> None:
    # The operator and `athenic dev` validate with the packaged copy; Helm installs the chart's.
    assert PACKAGE_CRD.read_bytes() == CHART_CRD.read_bytes(), (
        "copy charts/athenic/crds/sandboxquotas.athenic.dev.yaml to services/athenic/shared/")


def test_crd_shape_kubectl_relies_on() -> None:
    crd = crd_manifest()
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "sandboxquotas.athenic.dev"
    assert (spec["group"], spec["scope"]) == ("athenic.dev", "Namespaced")
    assert spec["names"]["shortNames"] == ["sbq"]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Tenant": ".spec.tenant",
        "Max-Concurrent": ".spec.maxConcurrentExecutions",
        "Used": ".status.used.concurrentExecutions",
        "Per-Minute": ".spec.maxExecutionsPerMinute",
        "Timeout": ".spec.maxExecutionSeconds",
        "Phase": ".status.phase",
        "Age": ".metadata.creationTimestamp",
    }
    assert quota_schema()["properties"]["spec"]["required"] == ["tenant"]


def test_crd_defaults_are_the_policy_defaults() -> None:
    # The API server fills the CRD's defaults, a YAML file the policy's: both must agree.
    properties = quota_schema()["properties"]["spec"]["properties"]
    crd_defaults = {name: prop["default"] for name, prop in properties.items() if "default" in prop}
    builtin = msgspec.to_builtins(BUILTIN_DEFAULT)
    assert crd_defaults == {k: v for k, v in builtin.items() if k != "tenant" and v is not None}


@pytest.mark.parametrize(("spec", "where"), [
    ({}, "spec: 'tenant' is a required property"),
    ({"tenant": "a.b"}, "spec.tenant"),
    ({"tenant": "**"}, "spec.tenant"),
    ({"tenant": "x" * 129}, "spec.tenant"),
    ({"tenant": "acme", "maxConcurrentExecutions": 0}, "spec.maxConcurrentExecutions"),
    ({"tenant": "acme", "maxConcurrentExecutions": "4"}, "spec.maxConcurrentExecutions"),
    ({"tenant": "acme", "maxConcurrentExecutions": 2.5}, "spec.maxConcurrentExecutions"),
    ({"tenant": "acme", "maxExecutionsPerMinute": 0}, "spec.maxExecutionsPerMinute"),
    ({"tenant": "acme", "maxExecutionSeconds": 3601}, "spec.maxExecutionSeconds"),
    ({"tenant": "acme", "memoryMiB": 16}, "spec.memoryMiB"),
    ({"tenant": "acme", "allowInternet": "yes"}, "spec.allowInternet"),
    ({"tenant": "acme", "e2bTemplate": ""}, "spec.e2bTemplate"),
    ({"tenant": "acme", "sandboxIdleSeconds": 5}, "spec.sandboxIdleSeconds"),
    ({"tenant": "acme", "onExceed": "Drop"}, "spec.onExceed"),
    ({"tenant": "acme", "sandboxRetentionSeconds": 9}, "spec.sandboxRetentionSeconds"),
    ({"tenant": "acme", "sandboxRetentionSeconds": 2_592_001}, "spec.sandboxRetentionSeconds"),
    ({"tenant": "acme", "sandboxRetentionSeconds": "1d"}, "spec.sandboxRetentionSeconds"),
    ({"tenant": "acme", "e2bWarmPool": -1}, "spec.e2bWarmPool"),
    ({"tenant": "acme", "e2bWarmPool": 101}, "spec.e2bWarmPool"),
    ({"tenant": "acme", "e2bWarmPool": 1.5}, "spec.e2bWarmPool"),
    ({"tenant": "acme", "maxIdleSandboxes": -1}, "spec.maxIdleSandboxes"),
    ({"tenant": "acme", "maxIdleSandboxes": 10_001}, "spec.maxIdleSandboxes"),
    ({"tenant": "acme", "maxPausedSandboxes": -1}, "spec.maxPausedSandboxes"),
    ({"tenant": "acme", "maxPausedSandboxes": 100_001}, "spec.maxPausedSandboxes"),
])
def test_schema_refuses_bad_values(spec: dict[str, Any], where: str) -> None:
    errors = schema_errors(quota(spec))
    assert any(error.startswith(where) for error in errors), errors


def test_schema_accepts_the_edges() -> None:
    edges = {"tenant": "*", "maxConcurrentExecutions": 1, "maxExecutionsPerMinute": 1,
             "maxExecutionSeconds": 3600, "memoryMiB": 32, "sandboxIdleSeconds": 10,
             "onExceed": "Reject", "allowInternet": True, "e2bTemplate": "team/tpl-1",
             "sandboxRetentionSeconds": 10, "e2bWarmPool": 0, "maxIdleSandboxes": 0, "maxPausedSandboxes": 0}
    assert schema_errors(quota(edges)) == []
    upper = {"tenant": "acme", "sandboxRetentionSeconds": 2_592_000, "e2bWarmPool": 100,
             "maxIdleSandboxes": 10_000, "maxPausedSandboxes": 100_000}
    assert schema_errors(quota(upper)) == []
    assert schema_errors(quota({"tenant": "A_b-9" * 25 + "xyz"})) == []  # 128 characters


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid_sandbox_quotas(path: Path) -> None:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert documents
    for doc in documents:
        assert schema_errors(doc, strict_fields=True) == [], f"{path.name}: {doc['metadata']['name']}"
    assert load_quotas(path)  # and the dev command takes the file as it is


def test_examples_folder_is_not_empty() -> None:
    assert len(EXAMPLES) >= 3
