"""SandboxQuota limits enforced by three real orchestrator processes sharing one nats-server.

Concurrency is observed independently of the leases: each execution's record carries when it
started (``startedAt``) and how long it ran (``durationMs``); the peak overlap of those
intervals is what a tenant actually ran at once.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from athenic.shared import names
from athenic.shared.messages import progress_event_decoder
from athenic.shared.policy import BUILTIN_DEFAULT
from tests.orchestrator.quota.traffic import (
    QuotaTraffic,
    executions,
    overlapping_at_peak,
    peak_overlap,
    slow_code,
    wait_until_early_in_a_minute,
)
from tests.support.services import Orchestrator

pytestmark = pytest.mark.integration

RUNS = 100


async def test_peak_concurrency_stays_within_the_limit_across_three_replicas(
    traffic: QuotaTraffic, replicas: list[Orchestrator]
) -> None:
    await traffic.set_policy(tenant="acme", maxConcurrentExecutions=2, maxExecutionsPerMinute=100_000,
                            onExceed="Queue")
    client_ids = [await traffic.post("acme", slow_code(0.3, i)) for i in range(RUNS)]
    records = await traffic.final(client_ids, timeout=100)
    runs = executions(records.values())
    statuses = [record.status for record in records.values()]
    peak = peak_overlap(runs)
    answered_by = [replica.log().count('"event": "answered"') for replica in replicas]
    print(f"{RUNS} executions: {statuses.count('completed')} completed, peak concurrency {peak}, "
          f"messages answered per replica {answered_by}")
    assert statuses.count("completed") == RUNS, statuses
    assert len(runs) == RUNS and all(run.stdout.startswith("done") for run in runs)
    assert peak <= 2, overlapping_at_peak(runs)
    assert peak == 2  # the limit is used, not just respected by running one at a time
    assert sum(1 for n in answered_by if n) >= 2, "the work was shared between replicas"


async def test_without_any_quota_the_builtin_default_applies(traffic: QuotaTraffic) -> None:
    limit = BUILTIN_DEFAULT.max_concurrent_executions
    client_ids = [await traffic.post("no-quota", slow_code(0.4, i)) for i in range(3 * limit)]
    records = await traffic.final(client_ids, timeout=60)
    assert {record.status for record in records.values()} == {"completed"}
    peak = peak_overlap(executions(records.values()))
    print(f"built-in default: peak concurrency {peak} (limit {limit})")
    assert 1 < peak <= limit


async def test_the_per_minute_limit_rejects_the_rest_with_a_quota_message(traffic: QuotaTraffic) -> None:
    await traffic.set_policy(tenant="metered", maxConcurrentExecutions=20, maxExecutionsPerMinute=5,
                            onExceed="Reject")
    await asyncio.sleep(wait_until_early_in_a_minute())  # the burst must not straddle two minutes
    client_ids = [await traffic.post("metered", f"```python\nprint({i})\n```") for i in range(12)]
    records = await traffic.final(client_ids, timeout=40)
    completed = [r for r in records.values() if r.status == "completed"]
    failed = [r for r in records.values() if r.status == "failed"]
    print(f"per-minute limit 5: {len(completed)} completed, {len(failed)} failed")
    assert len(completed) == 5
    assert len(failed) == 7
    for record in failed:
        assert record.last_response is not None and record.last_response.error is not None
        assert "maxExecutionsPerMinute" in record.last_response.error
        assert "at most 5 executions per minute" in record.last_response.message
        assert record.last_response.executions == []


async def test_reject_at_the_concurrency_limit_answers_at_once_with_the_limit(traffic: QuotaTraffic) -> None:
    await traffic.set_policy(tenant="strict", maxConcurrentExecutions=1, onExceed="Reject")
    slow = await traffic.post("strict", slow_code(4, "slow"))
    await traffic.wait_leases("strict", 1)
    rejected = [await traffic.post("strict", "```python\nprint('too many')\n```") for _ in range(3)]
    records = await traffic.final(rejected, timeout=20)
    assert (await traffic.record(slow)).status == "processing"  # type: ignore[union-attr]
    for record in records.values():
        assert record.status == "failed"
        assert record.last_response is not None and record.last_response.error is not None
        assert "at most 1 execution at a time (maxConcurrentExecutions)" in record.last_response.error
    assert (await traffic.final([slow], timeout=20))[slow].status == "completed"
    after = await traffic.post("strict", "```python\nprint('my turn')\n```")
    record = (await traffic.final([after], timeout=20))[after]
    assert record.status == "completed", record


async def test_a_message_of_several_runs_at_a_limit_of_one_runs_them_all(traffic: QuotaTraffic) -> None:
    # its first run is admitted as the message is read; each next run frees the slot of the one before
    await traffic.set_policy(tenant="single", maxConcurrentExecutions=1, onExceed="Reject")
    three = await traffic.post("single", "".join(f"```python\nprint({i})\n```\n" for i in range(3)))
    record = (await traffic.final([three], timeout=20))[three]
    assert record.status == "completed", record
    assert record.last_response is not None
    assert [run.stdout for run in record.last_response.executions] == ["0\n", "1\n", "2\n"]
    await traffic.wait_leases("single", 0)  # and nothing is left held once it is answered
    after = await traffic.post("single", "```python\nprint('next')\n```")
    assert (await traffic.final([after], timeout=20))[after].status == "completed"


async def test_a_policy_change_reaches_a_queued_execution_without_a_restart(
    traffic: QuotaTraffic, replicas: list[Orchestrator]
) -> None:
    await traffic.set_policy(tenant="growing", maxConcurrentExecutions=1, onExceed="Queue")
    slow = await traffic.post("growing", slow_code(5, "slow"))
    await traffic.wait_leases("growing", 1)
    waiting = "growing-waiting"
    pushed = await traffic.nc.subscribe(names.event_subject(waiting))  # what the app's WebSocket relays
    await traffic.post("growing", "```python\nprint('waited')\n```", client_id=waiting)
    await asyncio.sleep(1.0)
    record = await traffic.record(waiting)
    assert record is not None and record.status == "processing", "a queued message waits, unanswered"
    changed_at = time.monotonic()
    await traffic.set_policy(tenant="growing", maxConcurrentExecutions=2, onExceed="Queue")
    done = await traffic.final([waiting], timeout=20)
    print(f"queued execution admitted {time.monotonic() - changed_at:.2f} s after the limit was raised")
    slow_record = await traffic.record(slow)
    assert slow_record is not None and slow_record.status == "processing", "the slow one still runs"
    assert done[waiting].status == "completed"
    [run] = executions([done[waiting]])
    assert run.stdout == "waited\n"
    phases = []
    while (msg := await pushed.next_msg(timeout=2)) is not None:
        event = progress_event_decoder.decode(msg.data)
        if event.type == "status":
            phases.append(event.phase)
        if event.phase == "completed":
            break
    assert phases == ["planning", "queued", "running", "completed"]
    assert sum(_metric(replica, 'athenic_orchestrator_quota_decisions_total{outcome="admitted_after_queue"}')
               for replica in replicas) >= 1
    await traffic.final([slow], timeout=20)


async def test_policy_limits_reach_the_sandbox(traffic: QuotaTraffic) -> None:
    await traffic.set_policy(tenant="bounded", maxExecutionSeconds=1, memoryMiB=128)
    long = await traffic.post("bounded", slow_code(20, "late"))
    greedy = await traffic.post("bounded", "```python\nblob = bytearray(512 * 1024 * 1024)\nprint(len(blob))\n```")
    records = await traffic.final([long, greedy], timeout=30)
    [stopped] = executions([records[long]])
    assert stopped.timed_out and stopped.stdout == ""
    assert stopped.error is not None and "1 s time limit" in stopped.error.value
    assert stopped.duration_ms < 10_000  # stopped by the policy's 1 s, not the 30 s default
    [starved] = executions([records[greedy]])
    assert starved.error is not None and starved.error.name == "MemoryError"
    assert "128 MiB" in starved.error.value


def _metric(replica: Orchestrator, sample: str) -> float:
    """One sample of a replica's Prometheus metrics (0 when absent)."""
    text = httpx.get(f"http://127.0.0.1:{replica.port}/metrics", timeout=5).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(sample + " ")]
    return values[0] if values else 0.0
