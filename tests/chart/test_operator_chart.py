"""The operator's templates: RBAC exactly what it uses, and a release that leaves the operator
to another one."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.chart.manifests import (
    Manifest,
    container,
    env_value,
    named,
    of_kind,
)

pytestmark = pytest.mark.unit

Render = Callable[..., list[Manifest]]


def test_operator_rbac_is_exactly_what_it_uses(render: Render) -> None:
    def grants(group: str, resources: list[str], verbs: list[str]) -> set[tuple[str, str, str]]:
        return {(group, r, v) for r in resources for v in verbs}

    def granted(role: Manifest) -> set[tuple[str, str, str]]:
        assert not any("*" in str(rule) for rule in role["rules"])
        return {(group, resource, verb)
                for rule in role["rules"]
                for group in rule["apiGroups"] for resource in rule["resources"] for verb in rule["verbs"]}

    own = (grants("athenic.dev", ["sandboxquotas"], ["get", "list", "watch", "patch"])
           | grants("athenic.dev", ["sandboxquotas/status"], ["get", "patch"])
           | grants("", ["events"], ["create", "patch"]))
    # all namespaces: a ClusterRole, with kopf's cluster-wide discovery
    everywhere = render("defaults", {"operator": {"watch": {"allNamespaces": True}}})
    assert granted(named(everywhere, "ClusterRole", "athenic-operator")) == (
        own | grants("kopf.dev", ["clusterkopfpeerings"], ["get", "list", "watch", "patch"])
        | grants("apiextensions.k8s.io", ["customresourcedefinitions"], ["get", "list", "watch"])
        | grants("", ["namespaces"], ["list", "watch"]))
    assert not of_kind(everywhere, "Role")
    binding = named(everywhere, "ClusterRoleBinding", "athenic-operator")
    assert binding["roleRef"]["name"] == "athenic-operator"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "athenic-operator", "namespace": "athenic"}]

    # the default: the release's namespace only, a Role there and nothing cluster-wide
    manifests = render("defaults")
    role = named(manifests, "Role", "athenic-operator")
    assert granted(role) == own | grants("kopf.dev", ["kopfpeerings"], ["get", "list", "watch", "patch"])
    assert not of_kind(manifests, "ClusterRole")
    assert not of_kind(manifests, "ClusterRoleBinding")
    op_pod = named(manifests, "Deployment", "athenic-operator")["spec"]["template"]["spec"]
    assert op_pod["serviceAccountName"] == "athenic-operator"
    # the api and orchestrator never talk to the Kubernetes API: no token mounted
    for name in ("athenic-api", "athenic-orchestrator"):
        pod = named(manifests, "Deployment", name)["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == name
        assert pod["automountServiceAccountToken"] is False
    peering = named(manifests, "KopfPeering", "athenic-operator")
    assert env_value(container(manifests, "athenic-operator"), "ATHENIC_OPERATOR_PEERING") == \
        peering["metadata"]["name"]
    named(everywhere, "ClusterKopfPeering", "athenic-operator")


def test_operator_can_be_left_to_another_release(render: Render) -> None:
    manifests = render("defaults", {"operator": {"enabled": False}})
    assert not of_kind(manifests, "ClusterRole")
    assert not of_kind(manifests, "Role")
    assert not of_kind(manifests, "ClusterKopfPeering")
    assert not of_kind(manifests, "KopfPeering")
    assert {m["metadata"]["name"] for m in of_kind(manifests, "Deployment")} == {
        "athenic-api", "athenic-orchestrator", "athenic-notifier"}
