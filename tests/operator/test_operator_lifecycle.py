"""Create, update and delete a SandboxQuota: the policy in NATS, the status, the events."""

from __future__ import annotations

from athenic.shared.policy import policy_decoder
from tests.operator.conftest import Broker, Cluster, Operators, eventually, quota_body


async def test_create_publishes_policy_and_reports_status(cluster: Cluster, broker: Broker,
                                                          operators: Operators) -> None:
    await operators.start()
    await cluster.create(quota_body("acme", {"tenant": "acme", "maxConcurrentExecutions": 2,
                                             "memoryMiB": 256, "onExceed": "Reject"}))

    keys = await eventually(lambda: _has(broker, "tenant.acme"), what="policy published")
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
    assert "athenic.dev/policy" in cluster.get("acme")["metadata"]["finalizers"]
    await eventually(lambda: "Published" in cluster.event_reasons("acme"), what="event posted")


async def _has(broker: Broker, key: str) -> dict[str, bytes] | None:
    keys = await broker.policy_keys()
    return keys if key in keys else None
