"""The chart's operator RBAC against what the real operator asks the API server for.

The operator (kopf runtime, peering on, as the chart runs it) works through a quota's whole
life against the kmock emulator while every request is recorded; each request, translated to
its RBAC verb and resource, must be granted by the rendered rules: by default a Role in the
release's namespace (it watches that namespace only), with ``operator.watch.allNamespaces`` a
ClusterRole.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import kmock
import pytest

from tests.chart.manifests import Manifest, container, env_value, named
from tests.support.kubernetes import Cluster, Emulator, Operators, PolicyBuckets, declare_resources, quota_body
from tests.support.waits import eventually

pytestmark = pytest.mark.integration

PEERINGS = "kopf.dev/v1/clusterkopfpeerings"
NAMESPACED_PEERINGS = "kopf.dev/v1/kopfpeerings"
Render = Callable[..., list[Manifest]]
READS = {"LIST": "list", "WATCH": "watch", "FETCH": "get"}
WRITES = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


class RecordingEmulator(Emulator):
    """The operator tests' emulator, keeping (RBAC verb, group, resource) of kopf's requests
    (not the test's own, which play kubectl)."""

    def __init__(self) -> None:
        super().__init__()
        self.used: set[tuple[str, str, str]] = set()
        # the namespace of each request (None: cluster-scoped)
        self.namespaces: set[str | None] = set()

    async def _handle(self, request: Any) -> Any:
        # discovery (/api/v1, /apis/<group>/<version>) names no resource: every account may read it
        by_kopf = str(request.headers.get("User-Agent", "")).startswith("kopf/")
        if by_kopf and request.resource is not None and request.resource.plural and request.action is not None:
            resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
            method = str(request.method.value).upper()
            verb = READS[request.action.value] if method == "GET" else WRITES[method]
            self.used.add((verb, request.resource.group or "", resource))
            self.namespaces.add(request.namespace or None)
        return await super()._handle(request)


@pytest.fixture
async def emulator() -> AsyncIterator[RecordingEmulator]:
    async with RecordingEmulator() as handler, kmock.Server(handler):
        declare_resources(handler)
        yield handler


def granted(role: Manifest) -> set[tuple[str, str, str]]:
    return {(verb, group, resource)
            for rule in role["rules"]
            for group in rule["apiGroups"] for resource in rule["resources"] for verb in rule["verbs"]}


async def quota_life(cluster: Cluster) -> None:
    await cluster.create(quota_body("acme", {"tenant": "acme", "maxConcurrentExecutions": 2}))
    await eventually(lambda: cluster.status("acme").get("phase") == "Active", what="quota accepted")
    await cluster.update_spec("acme", {"tenant": "acme", "maxConcurrentExecutions": 3})
    await eventually(lambda: (cluster.status("acme").get("hard") or {}).get("maxConcurrentExecutions") == 3,
                     what="update applied")
    await cluster.delete("acme")
    await eventually(lambda: cluster.get("acme") is None, what="finalizer released")
    await asyncio.sleep(0.5)  # a last peering keep-alive


async def test_by_default_the_operator_watches_its_release_namespace_with_a_role(
        render: Render, emulator: RecordingEmulator, cluster: Cluster, buckets: PolicyBuckets,
        operators: Operators) -> None:
    manifests = render("defaults")
    operator = container(manifests, "athenic-operator")
    assert env_value(operator, "ATHENIC_OPERATOR_NAMESPACES") == "athenic"  # the release's namespace
    assert not [m for m in manifests if m["kind"] in ("ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering")]
    role = named(manifests, "Role", "athenic-operator")
    assert role["metadata"]["namespace"] == "athenic"
    binding = named(manifests, "RoleBinding", "athenic-operator")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "athenic-operator"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "athenic-operator", "namespace": "athenic"}]
    peering = env_value(operator, "ATHENIC_OPERATOR_PEERING")
    assert peering
    assert named(manifests, "KopfPeering", peering)["metadata"]["namespace"] == "athenic"
    emulator.resources[NAMESPACED_PEERINGS] = kmock.ResourceInfo(
        kind="KopfPeering", singular="kopfpeering", namespaced=True, verbs={"list", "watch", "get", "patch"})
    emulator.objects[kmock.resource(NAMESPACED_PEERINGS), "athenic", peering] = {
        "apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
        "metadata": {"name": peering, "namespace": "athenic", "resourceVersion": "1"}, "status": {}}

    await operators.start(ATHENIC_OPERATOR_STANDALONE="false", ATHENIC_OPERATOR_PEERING=peering,
                          ATHENIC_OPERATOR_NAMESPACES=env_value(operator, "ATHENIC_OPERATOR_NAMESPACES") or "")
    await quota_life(cluster)

    used = emulator.used
    assert ("patch", "kopf.dev", "kopfpeerings") in used, "peering keep-alives were not seen"
    # nothing cluster-wide, nothing in another namespace: the Role is all it needs
    assert emulator.namespaces == {"athenic"}, emulator.namespaces
    missing = used - granted(role)
    assert not missing, f"the operator asked for what its Role does not grant: {sorted(missing)}"


def test_more_namespaces_get_a_role_each(render: Render) -> None:
    manifests = render("defaults", {"operator": {"watch": {"namespaces": ["team-a", "athenic"]}}})
    assert env_value(container(manifests, "athenic-operator"), "ATHENIC_OPERATOR_NAMESPACES") == "athenic,team-a"
    assert sorted(m["metadata"]["namespace"] for m in manifests if m["kind"] == "Role") == ["athenic", "team-a"]
    bindings = [m for m in manifests if m["kind"] == "RoleBinding"]
    assert {b["subjects"][0]["namespace"] for b in bindings} == {"athenic"}  # the release's service account


async def test_watching_all_namespaces_takes_a_cluster_role(
        render: Render, emulator: RecordingEmulator, cluster: Cluster, buckets: PolicyBuckets,
        operators: Operators) -> None:
    manifests = render("defaults", {"operator": {"watch": {"allNamespaces": True}}})
    assert env_value(container(manifests, "athenic-operator"), "ATHENIC_OPERATOR_NAMESPACES") == ""
    assert not [m for m in manifests if m["kind"] in ("Role", "RoleBinding", "KopfPeering")]
    peering = env_value(container(manifests, "athenic-operator"), "ATHENIC_OPERATOR_PEERING")
    assert peering
    named(manifests, "ClusterKopfPeering", peering)  # the chart creates what the operator needs
    emulator.resources[PEERINGS] = kmock.ResourceInfo(
        kind="ClusterKopfPeering", singular="clusterkopfpeering", namespaced=False,
        verbs={"list", "watch", "get", "patch"})
    emulator.objects[kmock.resource(PEERINGS), None, peering] = {
        "apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
        "metadata": {"name": peering, "resourceVersion": "1"}, "status": {}}

    await operators.start(ATHENIC_OPERATOR_STANDALONE="false", ATHENIC_OPERATOR_PEERING=peering)
    await quota_life(cluster)

    role = named(manifests, "ClusterRole", "athenic-operator")
    used = emulator.used
    assert ("patch", "athenic.dev", "sandboxquotas/status") in used or \
        ("patch", "athenic.dev", "sandboxquotas") in used, f"no quota write seen: {sorted(used)}"
    assert ("patch", "kopf.dev", "clusterkopfpeerings") in used, "peering keep-alives were not seen"
    missing = used - granted(role)
    assert not missing, f"the operator asked for what its ClusterRole does not grant: {sorted(missing)}"
