"""The chart's operator ClusterRole against what the real operator asks the API server for.

The operator (kopf runtime, peering on, as the chart runs it) works through a quota's whole
life against the kmock emulator while every request is recorded; each request, translated to
its RBAC verb and resource, must be granted by the rendered ClusterRole.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import kmock
import pytest

from tests.helm.manifests import Manifest, container, env_value, named
from tests.operator.conftest import (  # the operator's own fixtures, reused as they are
    Broker,
    Cluster,
    Emulator,
    Operators,
    broker,
    cluster,
    declare_resources,
    eventually,
    operators,
    quota_body,
)

__all__ = ["broker", "cluster", "operators"]  # fixtures, imported to be found by pytest

PEERINGS = "kopf.dev/v1/clusterkopfpeerings"
Render = Callable[..., list[Manifest]]
READS = {"LIST": "list", "WATCH": "watch", "FETCH": "get"}
WRITES = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


class RecordingEmulator(Emulator):
    """The operator tests' emulator, keeping (RBAC verb, group, resource) of kopf's requests
    (not the test's own, which play kubectl)."""

    def __init__(self) -> None:
        super().__init__()
        self.used: set[tuple[str, str, str]] = set()

    async def _handle(self, request: Any) -> Any:
        # discovery (/api/v1, /apis/<group>/<version>) names no resource: every account may read it
        by_kopf = str(request.headers.get("User-Agent", "")).startswith("kopf/")
        if by_kopf and request.resource is not None and request.resource.plural and request.action is not None:
            resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
            method = str(request.method.value).upper()
            verb = READS[request.action.value] if method == "GET" else WRITES[method]
            self.used.add((verb, request.resource.group or "", resource))
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


async def test_operator_requests_are_all_granted(render: Render, emulator: RecordingEmulator,
                                                 cluster: Cluster, broker: Broker, operators: Operators) -> None:
    manifests = render("defaults")
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
    await cluster.create(quota_body("acme", {"tenant": "acme", "maxConcurrentExecutions": 2}))
    await eventually(lambda: cluster.status("acme").get("phase") == "Active", what="quota accepted")
    await cluster.update_spec("acme", {"tenant": "acme", "maxConcurrentExecutions": 3})
    await eventually(lambda: (cluster.status("acme").get("hard") or {}).get("maxConcurrentExecutions") == 3,
                     what="update applied")
    await cluster.delete("acme")
    await eventually(lambda: cluster.get("acme") is None, what="finalizer released")
    await asyncio.sleep(0.5)  # a last peering keep-alive

    role = named(manifests, "ClusterRole", "athenic-operator")
    used = emulator.used
    assert ("patch", "athenic.dev", "sandboxquotas/status") in used or \
        ("patch", "athenic.dev", "sandboxquotas") in used, f"no quota write seen: {sorted(used)}"
    assert ("patch", "kopf.dev", "clusterkopfpeerings") in used, "peering keep-alives were not seen"
    missing = used - granted(role)
    assert not missing, f"the operator asked for what its ClusterRole does not grant: {sorted(missing)}"
