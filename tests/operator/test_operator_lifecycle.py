"""Create, update and delete a SandboxQuota: the policy in NATS, the status, the events."""

from __future__ import annotations

import pytest

from athenic.shared.policy import policy_decoder
from tests.support.kubernetes import Cluster, Operators, PolicyBuckets, quota_body
from tests.support.waits import eventually

pytestmark = pytest.mark.integration


async def test_create_publishes_policy_and_reports_status(cluster: Cluster, buckets: PolicyBuckets,
                                                          operators: Operators) -> None:
    await operators.start()
    await cluster.create(quota_body("acme", {"tenant": "acme", "maxConcurrentExecutions": 2,
                                             "memoryMiB": 256, "onExceed": "Reject"}))

    keys = await eventually(lambda: _has(buckets, "tenant.acme"), what="policy published")
    policy = policy_decoder.decode(keys["tenant.acme"])
    assert (policy.tenant, policy.max_concurrent_executions, policy.memory_mib, policy.on_exceed) == (
        "acme", 2, 256, "Reject")
    assert policy.max_executions_per_minute == 60  # the CRD's default

    await eventually(lambda: cluster.status("acme").get("phase") == "Active", what="phase Active")
    status = cluster.status("acme")
    assert status["observedGeneration"] == 1
    assert status["hard"]["maxConcurrentExecutions"] == 2
    assert status["hard"]["memoryMiB"] == 256
    ready = cluster.ready("acme")
    assert (ready["status"], ready["reason"]) == ("True", "Published")
    assert "athenic.dev/policy" in cluster.body("acme")["metadata"]["finalizers"]
    await eventually(lambda: "Published" in cluster.event_reasons("acme"), what="event posted")


async def _has(buckets: PolicyBuckets, key: str) -> dict[str, bytes] | None:
    keys = await buckets.policy_keys()
    return keys if key in keys else None


async def test_update_republishes_and_bumps_observed_generation(cluster: Cluster, buckets: PolicyBuckets,
                                                                  operators: Operators) -> None:
    await operators.start()
    await cluster.create(quota_body("acme", {"tenant": "acme", "memoryMiB": 256}))
    await eventually(lambda: cluster.status("acme").get("observedGeneration") == 1, what="first status")

    await cluster.update_spec("acme", {"memoryMiB": 1024, "e2bTemplate": "python-data"})

    async def republished() -> bool:
        value = (await buckets.policy_keys()).get("tenant.acme")
        return value is not None and policy_decoder.decode(value).memory_mib == 1024

    await eventually(republished, what="new policy in NATS")
    policy = policy_decoder.decode((await buckets.policy_keys())["tenant.acme"])
    assert policy.e2b_template == "python-data"
    await eventually(lambda: cluster.status("acme").get("observedGeneration") == 2, what="status follows")
    assert cluster.status("acme")["hard"]["memoryMiB"] == 1024
    await eventually(lambda: cluster.event_reasons("acme").count("Published") == 2, what="one event per change")


async def test_tenant_change_moves_the_policy(cluster: Cluster, buckets: PolicyBuckets, operators: Operators) -> None:
    await operators.start()
    await cluster.create(quota_body("q", {"tenant": "acme"}))
    await eventually(lambda: _has(buckets, "tenant.acme"), what="published under acme")

    await cluster.update_spec("q", {"tenant": "globex"})

    async def moved() -> bool:
        keys = await buckets.policy_keys()
        return "tenant.globex" in keys and "tenant.acme" not in keys

    await eventually(moved, what="acme withdrawn, globex published")


async def test_delete_withdraws_policy_and_releases_object(cluster: Cluster, buckets: PolicyBuckets,
                                                             operators: Operators) -> None:
    await operators.start()
    await cluster.create(quota_body("acme", {"tenant": "acme"}))
    await cluster.create(quota_body("default", {"tenant": "*", "maxConcurrentExecutions": 1}, age_rank=1))
    await eventually(lambda: _keys_are(buckets, {"tenant.acme", "default"}), what="both published")
    await eventually(lambda: cluster.status("acme").get("phase") == "Active", what="handled (finalizer on)")

    await cluster.delete("acme")

    await eventually(lambda: _keys_are(buckets, {"default"}), what="acme withdrawn, the default stays")
    await eventually(lambda: cluster.get("acme") is None, what="finalizer released, object gone")
    await eventually(lambda: "Withdrawn" in cluster.event_reasons("acme"), what="event posted")


async def _keys_are(buckets: PolicyBuckets, expected: set[str]) -> bool:
    return set(await buckets.policy_keys()) == expected
