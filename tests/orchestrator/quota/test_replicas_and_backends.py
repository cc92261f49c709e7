"""Tests that need a broker of their own: which replica holds a message matters (a killed
replica's lease), or the orchestrator runs another sandbox backend (E2B's stand-in)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.orchestrator.quota.conftest import start_all
from tests.orchestrator.quota.traffic import Broker, executions, slow_code
from tests.support.e2b_standin import E2BStandIn
from tests.support.nats import NatsServer
from tests.support.services import Orchestrator

pytestmark = pytest.mark.integration

LEASE_TTL = 6


async def test_the_lease_of_a_killed_replica_expires_and_frees_the_slot(own_nats: NatsServer, tmp_path: Path) -> None:
    env = {"ATHENIC_LEASE_TTL_SECONDS": str(LEASE_TTL), "ATHENIC_QUOTA_RECHECK_SECONDS": "0.5",
           # no redelivery of the killed replica's message while the test looks at the slot
           "ATHENIC_ACK_WAIT_SECONDS": "120", "ATHENIC_CONCURRENCY": "2",
           # the survivor must refuse within the lease's TTL: no warm kernels starting beside it
           "ATHENIC_KERNEL_POOL_SIZE": "0"}
    doomed = Orchestrator(own_nats.url, tmp_path, **env)
    survivor = Orchestrator(own_nats.url, tmp_path, **env)
    broker: Broker | None = None
    try:
        await asyncio.to_thread(start_all, [doomed])
        broker = await Broker.connect(own_nats.url)
        await broker.set_policy(tenant="fragile", maxConcurrentExecutions=1, onExceed="Reject")
        await broker.post("fragile", slow_code(60, "never"))
        await broker.wait_leases("fragile", 1)  # only the doomed replica consumes yet: it holds the slot
        await asyncio.to_thread(start_all, [survivor])

        doomed.kill()  # SIGKILL: nothing releases the lease
        killed_at = time.monotonic()
        refused = await broker.post("fragile", "```python\nprint('too early')\n```")
        record = (await broker.final([refused], timeout=LEASE_TTL))[refused]
        assert record.status == "failed", "the dead replica's lease still holds the only slot"
        assert record.last_response is not None and "maxConcurrentExecutions" in (record.last_response.error or "")

        await broker.wait_leases("fragile", 0, timeout=LEASE_TTL + 10)
        print(f"the killed replica's lease expired {time.monotonic() - killed_at:.1f} s after the kill "
              f"(TTL {LEASE_TTL} s, rewritten every {LEASE_TTL / 3:.0f} s)")
        admitted = await broker.post("fragile", "```python\nprint('my turn')\n```")
        record = (await broker.final([admitted], timeout=20))[admitted]
        assert record.status == "completed", record
        assert [run.stdout for run in executions([record])] == ["my turn\n"]
    finally:
        if broker is not None:
            await broker.close()
        doomed.kill()
        await asyncio.to_thread(survivor.terminate)


async def test_the_template_and_internet_access_of_a_policy_reach_e2b(own_nats: NatsServer, tmp_path: Path) -> None:
    async with E2BStandIn() as standin:
        service = Orchestrator(own_nats.url, tmp_path, ATHENIC_SANDBOX="e2b", E2B_API_KEY="e2b_test_key",
                               E2B_API_URL=standin.url, E2B_SANDBOX_URL=standin.url)
        broker: Broker | None = None
        try:
            await asyncio.to_thread(start_all, [service])
            broker = await Broker.connect(own_nats.url)
            await broker.set_policy(tenant="science", e2bTemplate="data-science", allowInternet=True)
            await broker.set_policy(tenant="plain")
            science = await broker.post("science", "```python\nprint('hi')\n```")
            plain = await broker.post("plain", "```python\nprint('hi')\n```")
            records = await broker.final([science, plain], timeout=30)
            assert {record.status for record in records.values()} == {"completed"}
            assert all(run.backend == "e2b" for run in executions(records.values()))
            created = {sandbox.metadata["clientId"]: sandbox for sandbox in standin.creates}
            assert created[science].template == "data-science"
            assert created[science].allow_internet is True
            assert created[plain].template == "code-interpreter-v1"  # E2B's default template
            assert created[plain].allow_internet is False
        finally:
            if broker is not None:
                await broker.close()
            await asyncio.to_thread(service.terminate)


async def test_the_default_quota_governs_each_tenant_without_its_own_separately(
    own_nats: NatsServer, tmp_path: Path
) -> None:
    service = Orchestrator(own_nats.url, tmp_path, ATHENIC_CONCURRENCY="4")
    broker: Broker | None = None
    try:
        await asyncio.to_thread(start_all, [service])
        broker = await Broker.connect(own_nats.url)
        await broker.set_policy(tenant="*", maxConcurrentExecutions=1, onExceed="Reject")
        first = await broker.post("alpha", slow_code(2, "alpha"))
        second = await broker.post("beta", slow_code(2, "beta"))
        await broker.wait_leases("alpha", 1)
        await broker.wait_leases("beta", 1)  # one each: the limit is per tenant, not summed
        over = await broker.post("alpha", "```python\nprint('one too many')\n```")
        refused = (await broker.final([over], timeout=10))[over]
        assert refused.status == "failed"
        assert "tenant 'alpha' may run at most 1 execution at a time" in (refused.last_response.error or "")  # type: ignore[union-attr]
        records = await broker.final([first, second], timeout=20)
        assert {record.status for record in records.values()} == {"completed"}
    finally:
        if broker is not None:
            await broker.close()
        await asyncio.to_thread(service.terminate)
