"""A tenant flooding its quota never holds the worker slots every other tenant needs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.orchestrator.quota.replicas import QUOTA_ENV, start_all
from tests.orchestrator.quota.traffic import QuotaTraffic, slow_code
from tests.support.nats import NatsServer
from tests.support.services import Orchestrator

pytestmark = pytest.mark.integration

FLOOD = 200


async def test_a_flooded_quota_does_not_delay_another_tenant(nats_server: NatsServer, tmp_path: Path) -> None:
    # two slots only: before, the flood's queued executions held both, and the other tenant
    # waited behind all 200 of them
    orchestrator = Orchestrator(nats_server.url, tmp_path, ATHENIC_CONCURRENCY="2", **QUOTA_ENV)
    start_all([orchestrator])
    traffic = await QuotaTraffic.connect(nats_server.url)
    try:
        await traffic.set_policy(tenant="flood", maxConcurrentExecutions=1, maxExecutionsPerMinute=100_000,
                                onExceed="Queue")
        flooded = [await traffic.post("flood", slow_code(3, n)) for n in range(FLOOD)]
        await traffic.wait_leases("flood", 1)
        posted = time.monotonic()
        other = await traffic.post("calm", "```python\nprint('not kept waiting')\n```")
        done = await traffic.final([other], timeout=30)
        print(f"the other tenant was answered {time.monotonic() - posted:.2f} s after posting")
        assert done[other].status == "completed"
        assert done[other].last_response is not None
        assert done[other].last_response.executions[0].stdout == "not kept waiting\n"
        # meanwhile the flood still runs one at a time
        assert len(await traffic.live_leases("flood")) <= 1
        finished = [await traffic.record(client_id) for client_id in flooded[:5]]
        assert sum(1 for record in finished if record is not None and record.status == "completed") <= 2
    finally:
        await traffic.close()
        orchestrator.kill()  # 200 queued runs need not drain
