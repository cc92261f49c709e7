"""The E2B lifecycle fields of a SandboxQuota: published to the orchestrators when valid,
refused (nothing published) when not."""

from __future__ import annotations

import pytest

from athenic.shared.policy import policy_decoder
from tests.support.kubernetes import Cluster, Operators, PolicyBuckets, quota_body
from tests.support.waits import eventually

pytestmark = pytest.mark.integration

E2B_FIELDS = {"sandboxRetentionSeconds": 3600, "e2bWarmPool": 2, "maxIdleSandboxes": 5, "maxPausedSandboxes": 50}


async def test_e2b_lifecycle_fields_are_published_and_reported(cluster: Cluster, buckets: PolicyBuckets,
                                                                operators: Operators) -> None:
    await operators.start()
    await cluster.create(quota_body("acme", {"tenant": "acme", **E2B_FIELDS}))
    await eventually(lambda: cluster.status("acme").get("phase") == "Active", what="phase Active")
    policy = policy_decoder.decode((await buckets.policy_keys())["tenant.acme"])
    assert (policy.sandbox_retention_seconds, policy.e2b_warm_pool, policy.max_idle_sandboxes,
            policy.max_paused_sandboxes) == (3600, 2, 5, 50)
    hard = cluster.status("acme")["hard"]
    assert {name: hard[name] for name in E2B_FIELDS} == E2B_FIELDS


async def test_defaults_apply_when_the_fields_are_left_out(cluster: Cluster, buckets: PolicyBuckets,
                                                           operators: Operators) -> None:
    await operators.start()
    await cluster.create(quota_body("plain", {"tenant": "plain"}))
    await eventually(lambda: cluster.status("plain").get("phase") == "Active", what="phase Active")
    policy = policy_decoder.decode((await buckets.policy_keys())["tenant.plain"])
    assert (policy.sandbox_retention_seconds, policy.e2b_warm_pool, policy.max_idle_sandboxes,
            policy.max_paused_sandboxes) == (86_400, 0, 20, 1000)


async def test_bad_e2b_lifecycle_fields_are_refused_naming_each(cluster: Cluster, buckets: PolicyBuckets,
                                                                operators: Operators) -> None:
    await operators.start()
    await cluster.create(quota_body("broken", {"tenant": "acme", "sandboxRetentionSeconds": 1, "e2bWarmPool": -2,
                                               "maxIdleSandboxes": "many", "maxPausedSandboxes": 10**9}))
    await eventually(lambda: cluster.status("broken").get("phase") == "Invalid", what="phase Invalid")
    message = cluster.ready("broken")["message"]
    for name in E2B_FIELDS:
        assert f"spec.{name}" in message, message
    assert await buckets.policy_keys() == {}
