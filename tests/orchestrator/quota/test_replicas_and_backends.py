"""Tests that need a broker of their own: which replica holds a message matters (a killed
replica's lease), or the orchestrator runs another sandbox backend (E2B's stand-in)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.orchestrator.quota.replicas import start_all
from tests.orchestrator.quota.traffic import QuotaTraffic, executions, slow_code
from tests.support.e2b_standin import E2BStandIn
from tests.support.nats import NatsServer
from tests.support.services import Orchestrator

pytestmark = pytest.mark.integration

LEASE_TTL = 6


async def test_the_lease_of_a_killed_replica_expires_and_frees_the_slot(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    env = {"ATHENIC_LEASE_TTL_SECONDS": str(LEASE_TTL), "ATHENIC_QUOTA_RECHECK_SECONDS": "0.5",
           # no redelivery of the killed replica's message while the test looks at the slot
           "ATHENIC_ACK_WAIT_SECONDS": "120", "ATHENIC_CONCURRENCY": "2",
           # the survivor must refuse within the lease's TTL: no warm kernels starting beside it
           "ATHENIC_KERNEL_POOL_SIZE": "0"}
    doomed = Orchestrator(nats_server.url, tmp_path, **env)
    survivor = Orchestrator(nats_server.url, tmp_path, **env)
    traffic: QuotaTraffic | None = None
    try:
        await asyncio.to_thread(start_all, [doomed])
        traffic = await QuotaTraffic.connect(nats_server.url)
        await traffic.set_policy(tenant="fragile", maxConcurrentExecutions=1, onExceed="Reject")
        await traffic.post("fragile", slow_code(60, "never"))
        await traffic.wait_leases("fragile", 1)  # only the doomed replica consumes yet: it holds the slot
        await asyncio.to_thread(start_all, [survivor])

        doomed.kill()  # SIGKILL: nothing releases the lease
        killed_at = time.monotonic()
        refused = await traffic.post("fragile", "```python\nprint('too early')\n```")
        record = (await traffic.final([refused], timeout=LEASE_TTL))[refused]
        assert record.status == "failed", "the dead replica's lease still holds the only slot"
        assert record.last_response is not None and "maxConcurrentExecutions" in (record.last_response.error or "")

        await traffic.wait_leases("fragile", 0, timeout=LEASE_TTL + 10)
        print(f"the killed replica's lease expired {time.monotonic() - killed_at:.1f} s after the kill "
              f"(TTL {LEASE_TTL} s, rewritten every {LEASE_TTL / 3:.0f} s)")
        admitted = await traffic.post("fragile", "```python\nprint('my turn')\n```")
        record = (await traffic.final([admitted], timeout=20))[admitted]
        assert record.status == "completed", record
        assert [run.stdout for run in executions([record])] == ["my turn\n"]
    finally:
        if traffic is not None:
            await traffic.close()
        doomed.kill()
        await asyncio.to_thread(survivor.terminate)


async def test_the_template_and_internet_access_of_a_policy_reach_e2b(nats_server: NatsServer, tmp_path: Path) -> None:
    async with E2BStandIn() as standin:
        service = Orchestrator(nats_server.url, tmp_path, ATHENIC_SANDBOX="e2b", E2B_API_KEY="e2b_test_key",
                               E2B_API_URL=standin.url, E2B_SANDBOX_URL=standin.url)
        traffic: QuotaTraffic | None = None
        try:
            await asyncio.to_thread(start_all, [service])
            traffic = await QuotaTraffic.connect(nats_server.url)
            await traffic.set_policy(tenant="science", e2bTemplate="data-science", allowInternet=True)
            await traffic.set_policy(tenant="plain")
            science = await traffic.post("science", "```python\nprint('hi')\n```")
            plain = await traffic.post("plain", "```python\nprint('hi')\n```")
            records = await traffic.final([science, plain], timeout=30)
            assert {record.status for record in records.values()} == {"completed"}
            assert all(run.backend == "e2b" for run in executions(records.values()))
            created = {sandbox.metadata["clientId"]: sandbox for sandbox in standin.creates}
            assert created[science].template == "data-science"
            assert created[science].allow_internet is True
            assert created[plain].template == "code-interpreter-v1"  # E2B's default template
            assert created[plain].allow_internet is False
        finally:
            if traffic is not None:
                await traffic.close()
            await asyncio.to_thread(service.terminate)


async def test_the_default_quota_governs_each_tenant_without_its_own_separately(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    service = Orchestrator(nats_server.url, tmp_path, ATHENIC_CONCURRENCY="4")
    traffic: QuotaTraffic | None = None
    try:
        await asyncio.to_thread(start_all, [service])
        traffic = await QuotaTraffic.connect(nats_server.url)
        await traffic.set_policy(tenant="*", maxConcurrentExecutions=1, onExceed="Reject")
        first = await traffic.post("alpha", slow_code(2, "alpha"))
        second = await traffic.post("beta", slow_code(2, "beta"))
        await traffic.wait_leases("alpha", 1)
        await traffic.wait_leases("beta", 1)  # one each: the limit is per tenant, not summed
        over = await traffic.post("alpha", "```python\nprint('one too many')\n```")
        refused = (await traffic.final([over], timeout=10))[over]
        assert refused.status == "failed"
        assert "tenant 'alpha' may run at most 1 execution at a time" in (refused.last_response.error or "")  # type: ignore[union-attr]
        records = await traffic.final([first, second], timeout=20)
        assert {record.status for record in records.values()} == {"completed"}
    finally:
        if traffic is not None:
            await traffic.close()
        await asyncio.to_thread(service.terminate)
