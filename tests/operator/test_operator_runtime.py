"""The operator as a deployment runs it: a liveness probe, and peering between replicas."""

from __future__ import annotations

import asyncio
import datetime
import logging

import aiohttp
import kmock
import pytest

from tests.support.kubernetes import Cluster, Operators, PolicyBuckets, quota_body
from tests.support.nats import free_port
from tests.support.waits import eventually

pytestmark = pytest.mark.integration

PEERINGS = "kopf.dev/v1/clusterkopfpeerings"


async def test_liveness_probe_answers_and_reports_nats(cluster: Cluster, operators: Operators) -> None:
    port = free_port()
    await operators.start(ATHENIC_OPERATOR_LIVENESS_PORT=str(port))

    async def probe() -> dict[str, object] | None:
        try:
            async with aiohttp.ClientSession() as session, \
                    session.get(f"http://127.0.0.1:{port}/healthz") as rsp:
                return await rsp.json() if rsp.status == 200 else None
        except aiohttp.ClientError:
            return None

    body = await eventually(probe, what="/healthz answers 200")
    assert body["nats"] is True


def _declare_peering(cluster: Cluster) -> None:
    cluster.emulator.resources[PEERINGS] = kmock.ResourceInfo(
        kind="ClusterKopfPeering", singular="clusterkopfpeering", namespaced=False,
        verbs={"list", "watch", "get", "patch"})  # as deploy/kopf-peering.yaml: no status subresource
    cluster.emulator.objects[kmock.resource(PEERINGS), None, "athenic-operator"] = {
        "apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
        "metadata": {"name": "athenic-operator", "resourceVersion": "1"}, "status": {}}


async def _set_peer(cluster: Cluster, identity: str, priority: int, lifetime: int) -> None:
    now = datetime.datetime.now(datetime.UTC).isoformat()
    patch = {"status": {identity: {"priority": priority, "lifetime": lifetime, "lastseen": now}}}
    await cluster.request("PATCH", "/apis/kopf.dev/v1/clusterkopfpeerings/athenic-operator", json=patch,
                          headers={"Content-Type": "application/merge-patch+json"})


async def test_replica_stays_idle_while_a_higher_priority_peer_lives(cluster: Cluster, buckets: PolicyBuckets,
                                                                      operators: Operators) -> None:
    _declare_peering(cluster)
    # Another replica (seen only through the peering object, as replicas see each other).
    await _set_peer(cluster, "replica-a", priority=1000, lifetime=60)
    await operators.start(ATHENIC_OPERATOR_STANDALONE="false", ATHENIC_OPERATOR_PRIORITY="10")
    await cluster.create(quota_body("acme", {"tenant": "acme"}))

    await asyncio.sleep(1.5)  # ample time for an active operator (it acts within ~0.1 s here)
    assert not cluster.status("acme")
    assert not cluster.body("acme")["metadata"].get("finalizers")
    assert await buckets.policy_keys() == {}

    # The other replica leaves (lifetime 0 = gone): this one takes over.
    await _set_peer(cluster, "replica-a", priority=1000, lifetime=0)
    await eventually(lambda: cluster.status("acme").get("phase") == "Active", what="took over")
    assert "tenant.acme" in await buckets.policy_keys()


async def test_two_replicas_never_both_act(cluster: Cluster, operators: Operators,
                                          caplog: pytest.LogCaptureFixture) -> None:
    _declare_peering(cluster)
    peering = {"ATHENIC_OPERATOR_STANDALONE": "false"}
    await operators.start(**peering, ATHENIC_OPERATOR_PRIORITY="100")
    await eventually(lambda: len(_peers(cluster)) == 1, what="the first replica announced itself")
    await operators.start(**peering, ATHENIC_OPERATOR_PRIORITY="10")
    await eventually(lambda: len(_peers(cluster)) == 2, what="the second replica announced itself")

    with caplog.at_level(logging.INFO, logger="kopf.objects"):
        await cluster.create(quota_body("acme", {"tenant": "acme"}))
        await eventually(lambda: cluster.status("acme").get("phase") == "Active", what="handled")
        await asyncio.sleep(1.0)  # room for a second, wrong, handling
    handled = [r for r in caplog.records if r.getMessage().startswith("create: Active")]
    assert len(handled) == 1, [r.getMessage() for r in handled]
    # Taking over when the active replica leaves: test_replica_stays_idle_while_a_higher_priority_peer_lives.


def _peers(cluster: Cluster) -> dict[str, object]:
    body = cluster.emulator.objects[kmock.resource(PEERINGS), None, "athenic-operator"]
    status: dict[str, object] = body.get("status") or {}
    return status
