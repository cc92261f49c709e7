"""What the schema cannot refuse: bad objects that reached the operator, one quota per tenant."""

from __future__ import annotations

import pytest

from athenic.shared.policy import policy_decoder
from tests.support.kubernetes import Cluster, Operators, PolicyBuckets, quota_body
from tests.support.waits import eventually

pytestmark = pytest.mark.integration


async def test_invalid_object_is_marked_and_publishes_nothing(cluster: Cluster, buckets: PolicyBuckets,
                                                               operators: Operators) -> None:
    # The API server's schema refuses this; an object stored before the schema tightened
    # (or written around it) still must not become a policy.
    await operators.start()
    await cluster.create(quota_body("broken", {"tenant": "acme", "maxConcurrentExecutions": 0,
                                               "onExceed": "Explode"}))

    await eventually(lambda: cluster.status("broken").get("phase") == "Invalid", what="phase Invalid")
    ready = cluster.ready("broken")
    assert (ready["status"], ready["reason"]) == ("False", "SchemaViolation")
    assert "spec.maxConcurrentExecutions" in ready["message"]
    assert "spec.onExceed" in ready["message"]
    assert "hard" not in cluster.status("broken")
    await eventually(lambda: "SchemaViolation" in cluster.event_reasons("broken"), what="warning event")
    assert await buckets.policy_keys() == {}

    # Fixing it makes it Active and publishes it.
    await cluster.update_spec("broken", {"maxConcurrentExecutions": 3, "onExceed": "Queue"})
    await eventually(lambda: cluster.status("broken").get("phase") == "Active", what="fixed")
    value = (await buckets.policy_keys())["tenant.acme"]
    assert policy_decoder.decode(value).max_concurrent_executions == 3


async def test_newer_duplicate_is_invalid_until_the_older_goes(cluster: Cluster, buckets: PolicyBuckets,
                                                                operators: Operators) -> None:
    await operators.start()
    await cluster.create(quota_body("acme-old", {"tenant": "acme", "maxConcurrentExecutions": 2}, age_rank=0))
    await eventually(lambda: cluster.status("acme-old").get("phase") == "Active", what="older active")
    await cluster.create(quota_body("acme-new", {"tenant": "acme", "maxConcurrentExecutions": 9}, age_rank=5))

    await eventually(lambda: cluster.status("acme-new").get("phase") == "Invalid", what="newer refused")
    ready = cluster.ready("acme-new")
    assert (ready["status"], ready["reason"]) == ("False", "DuplicateTenant")
    assert "athenic/acme-old" in ready["message"]
    await eventually(lambda: "DuplicateTenant" in cluster.event_reasons("acme-new"), what="warning event")
    assert cluster.status("acme-old")["phase"] == "Active"
    value = (await buckets.policy_keys())["tenant.acme"]
    assert policy_decoder.decode(value).max_concurrent_executions == 2  # the older one governs

    await cluster.delete("acme-old")

    async def handed_over() -> bool:
        stored = (await buckets.policy_keys()).get("tenant.acme")
        return stored is not None and policy_decoder.decode(stored).max_concurrent_executions == 9

    await eventually(handed_over, what="the newer quota's policy published")
    await eventually(lambda: cluster.status("acme-new").get("phase") == "Active", what="newer promoted")
    assert cluster.ready("acme-new")["reason"] == "Published"


async def test_same_tenant_in_two_namespaces_is_one_tenant(cluster: Cluster, buckets: PolicyBuckets,
                                                            operators: Operators) -> None:
    # One policy per tenant in NATS: the rule spans every namespace the operator watches.
    cluster.emulator.objects["v1/namespaces", None, "other"] = {"metadata": {"name": "other"}}
    await operators.start()
    await cluster.create(quota_body("acme", {"tenant": "acme"}, age_rank=0))
    await cluster.create(quota_body("acme", {"tenant": "acme"}, namespace="other", age_rank=1))

    await eventually(lambda: cluster.status("acme", namespace="other").get("phase") == "Invalid",
                     what="second namespace refused")
    await eventually(lambda: cluster.status("acme").get("phase") == "Active", what="first one in force")
    assert "athenic/acme" in cluster.ready("acme", namespace="other")["message"]
