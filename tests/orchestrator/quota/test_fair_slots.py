"""A tenant flooding its quota never holds the worker slots every other tenant needs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.orchestrator.quota.conftest import QUOTA_ENV, start_all
from tests.orchestrator.quota.traffic import Broker, slow_code
from tests.support.nats import NatsServer
from tests.support.services import Orchestrator

pytestmark = pytest.mark.integration

FLOOD = 200


async def test_a_flooded_quota_does_not_delay_another_tenant(own_nats: NatsServer, tmp_path: Path) -> None:
    # two slots only: before, the flood's queued executions held both, and the other tenant
    # waited behind all 200 of them
    orchestrator = Orchestrator(own_nats.url, tmp_path, ATHENIC_CONCURRENCY="2", **QUOTA_ENV)
    start_all([orchestrator])
    broker = await Broker.connect(own_nats.url)
    try:
        await broker.set_policy(tenant="flood", maxConcurrentExecutions=1, maxExecutionsPerMinute=100_000,
                                onExceed="Queue")
        flooded = [await broker.post("flood", slow_code(3, n)) for n in range(FLOOD)]
        await broker.wait_leases("flood", 1)
        posted = time.monotonic()
        other = await broker.post("calm", "```python\nprint('not kept waiting')\n```")
        done = await broker.final([other], timeout=30)
        print(f"the other tenant was answered {time.monotonic() - posted:.2f} s after posting")
        assert done[other].status == "completed"
        assert done[other].last_response is not None
        assert done[other].last_response.executions[0].stdout == "not kept waiting\n"
        # meanwhile the flood still runs one at a time
        assert len(await broker.live_leases("flood")) <= 1
        finished = [await broker.record(client_id) for client_id in flooded[:5]]
        assert sum(1 for record in finished if record is not None and record.status == "completed") <= 2
    finally:
        await broker.close()
        orchestrator.kill()  # 200 queued runs need not drain
