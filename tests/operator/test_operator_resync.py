"""At start the operator makes the policies bucket hold exactly the valid quotas' policies."""

from __future__ import annotations

import kmock
import pytest

from athenic.shared.policy import SandboxPolicy, encode_policy, policy_decoder
from tests.support.kubernetes import QUOTAS, Cluster, Operators, PolicyBuckets, quota_body
from tests.support.waits import eventually

pytestmark = pytest.mark.integration


async def _keys_are(buckets: PolicyBuckets, expected: set[str]) -> bool:
    return set(await buckets.policy_keys()) == expected


async def test_restart_removes_stale_keys_and_rewrites_outdated_ones(cluster: Cluster, buckets: PolicyBuckets,
                                                                       operators: Operators) -> None:
    first = await operators.start()
    await cluster.create(quota_body("acme", {"tenant": "acme", "maxConcurrentExecutions": 3}))
    await cluster.create(quota_body("globex", {"tenant": "globex"}, age_rank=1))
    await eventually(lambda: _keys_are(buckets, {"tenant.acme", "tenant.globex"}), what="both published")
    await operators.stop(first)

    # While no operator runs: a quota vanishes without its finalizer running (force-deleted),
    # someone writes keys by hand, and the bucket is restored from an older snapshot.
    del cluster.emulator.objects[kmock.resource(QUOTAS), "athenic", "globex"]
    await buckets.policies.put("tenant.ghost", encode_policy(SandboxPolicy(tenant="ghost")))
    await buckets.policies.put("default", encode_policy(SandboxPolicy(tenant="*", max_concurrent_executions=50)))
    await buckets.policies.put("tenant.acme", encode_policy(SandboxPolicy(tenant="acme", max_concurrent_executions=1)))

    await operators.start()

    await eventually(lambda: _keys_are(buckets, {"tenant.acme"}), what="exactly the valid quotas")
    policy = policy_decoder.decode((await buckets.policy_keys())["tenant.acme"])
    assert policy.max_concurrent_executions == 3


async def test_start_publishes_only_winners_of_existing_objects(cluster: Cluster, buckets: PolicyBuckets,
                                                                 operators: Operators) -> None:
    await cluster.create(quota_body("acme", {"tenant": "acme", "memoryMiB": 2048}, age_rank=0))
    await cluster.create(quota_body("acme-again", {"tenant": "acme", "memoryMiB": 64}, age_rank=1))
    await cluster.create(quota_body("broken", {"tenant": "zeta", "memoryMiB": 1}, age_rank=2))
    await cluster.create(quota_body("everyone", {"tenant": "*", "allowInternet": True}, age_rank=3))
    await buckets.policies.put("tenant.zeta", encode_policy(SandboxPolicy(tenant="zeta")))

    await operators.start()

    await eventually(lambda: _keys_are(buckets, {"tenant.acme", "default"}), what="winners only")
    keys = await buckets.policy_keys()
    assert policy_decoder.decode(keys["tenant.acme"]).memory_mib == 2048
    assert policy_decoder.decode(keys["default"]).allow_internet is True
    await eventually(lambda: cluster.status("acme-again").get("phase") == "Invalid", what="resumed verdicts")
    await eventually(lambda: cluster.status("broken").get("phase") == "Invalid", what="resumed verdicts")
    await eventually(lambda: cluster.status("everyone").get("phase") == "Active", what="resumed verdicts")


async def test_start_without_quotas_empties_the_bucket(cluster: Cluster, buckets: PolicyBuckets,
                                                       operators: Operators) -> None:
    await buckets.policies.put("tenant.ghost", encode_policy(SandboxPolicy(tenant="ghost")))
    await buckets.policies.put("default", encode_policy(SandboxPolicy(tenant="*")))

    await operators.start()

    await eventually(lambda: _keys_are(buckets, set()), what="stale keys removed: built-in defaults apply")
