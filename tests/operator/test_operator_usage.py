"""``status.used`` follows the leases and minute counts the orchestrators keep in NATS."""

from __future__ import annotations

import asyncio
import time

import pytest

from athenic.shared.quota_keys import Slots, encode_slots, epoch_minute, lease_key, slots_key
from tests.support.kubernetes import Cluster, Operators, PolicyBuckets, quota_body
from tests.support.waits import eventually

pytestmark = pytest.mark.integration


async def test_status_reports_usage_per_tenant_and_for_the_default(cluster: Cluster, buckets: PolicyBuckets,
                                                                    operators: Operators) -> None:
    await operators.start()
    await cluster.create(quota_body("acme", {"tenant": "acme", "maxConcurrentExecutions": 5}))
    await cluster.create(quota_body("default", {"tenant": "*"}, age_rank=1))
    minute = epoch_minute(time.time())
    running = b'{"holder":"orchestrator-0","admitted":true}'
    await buckets.leases.create(lease_key("acme", "run1"), running)
    await buckets.leases.create(lease_key("acme", "run2"), running)
    await buckets.leases.create(lease_key("acme", "run9"), b'{"holder":"orchestrator-1"}')  # still deciding
    await buckets.leases.create(lease_key("bob", "run3"), running)
    await buckets.leases.create(lease_key("carol", "run4"), running)
    if time.time() % 60 > 50:  # the counts are of this minute: not one about to end
        await asyncio.sleep(61 - time.time() % 60)
        minute = epoch_minute(time.time())
    await buckets.leases.put(slots_key("acme"), encode_slots(Slots(["run1", "run2"], minute, 7)))
    await buckets.leases.put(slots_key("bob"), encode_slots(Slots(["run3"], minute, 2)))
    await buckets.leases.put(slots_key("carol"), encode_slots(Slots(["run4"], minute - 1, 40)))  # an older minute

    def used(name: str) -> dict[str, int]:
        result: dict[str, int] = cluster.status(name).get("used") or {}
        return result

    await eventually(lambda: used("acme") == {"concurrentExecutions": 2, "executionsThisMinute": 7},
                     what="acme's usage", timeout=15)
    # The default quota governs bob and carol (no quota of their own): it reports their sum.
    await eventually(lambda: used("default") == {"concurrentExecutions": 2, "executionsThisMinute": 2},
                     what="the default's usage", timeout=15)

    await buckets.leases.delete(lease_key("acme", "run1"))
    await eventually(lambda: used("acme").get("concurrentExecutions") == 1, what="a finished run", timeout=15)
