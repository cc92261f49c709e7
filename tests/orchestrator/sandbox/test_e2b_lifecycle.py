"""E2B sandboxes across replicas: found in NATS, paused when idle, killed after retention,
claimed warm from the pool, bounded per tenant — the real SDK against the stand-in, a real
nats-server holding the sandboxes bucket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from athenic.orchestrator.policies import PolicyCache
from athenic.orchestrator.sandbox.base import RunSpec
from athenic.orchestrator.sandbox.e2b import E2BSandbox
from athenic.orchestrator.sandbox.e2b_directory import SandboxDirectory
from athenic.shared import names
from athenic.shared.broker import Broker
from athenic.shared.policy import SandboxPolicy
from athenic.shared.quotas import publish_policy
from tests.orchestrator.sandbox.backends import e2b_backend
from tests.support.e2b_standin import E2BStandIn, StandInSandbox

pytestmark = pytest.mark.integration


def spec(code: str, *, client: str = "c1", tenant: str = "default", idle: int = 300, retention: int = 86_400,
         max_idle: int = 20, max_paused: int = 1000, internet: bool = False) -> RunSpec:
    return RunSpec(client_id=client, tenant=tenant, language="python", code=code, timeout_seconds=20,
                   idle_seconds=idle, retention_seconds=retention, max_idle_sandboxes=max_idle,
                   max_paused_sandboxes=max_paused, allow_internet=internet)


async def wait_until(condition: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout} s"
        await asyncio.sleep(0.02)


async def ready_slots(backend: E2BSandbox, count: int, timeout: float = 30) -> None:
    """Wait until ``backend`` sees ``count`` ready warm sandboxes (its view of the bucket)."""
    deadline = time.monotonic() + timeout
    while len([entry for entry in await backend.directory.all_slots() if entry.slot.state == "ready"]) < count:
        assert time.monotonic() < deadline, f"{count} warm sandboxes not ready in {timeout} s"
        await asyncio.sleep(0.02)


def pooled(standin: E2BStandIn) -> list[StandInSandbox]:
    return [sandbox for sandbox in standin.creates if "pool" in sandbox.metadata]


@pytest.fixture
async def replicas(standin: E2BStandIn, broker: Broker) -> AsyncIterator[tuple[E2BSandbox, E2BSandbox]]:
    """Two orchestrator replicas' backends sharing one sandboxes bucket."""
    first, second = e2b_backend(broker), e2b_backend(broker)
    try:
        yield first, second
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_conversation_keeps_one_sandbox_whichever_replica_answers(
    replicas: tuple[E2BSandbox, E2BSandbox], standin: E2BStandIn, broker: Broker
) -> None:
    first, second = replicas
    await first.run(spec("history = ['m1']"))
    for number in range(2, 21):
        replica = (first, second)[number % 2]
        execution = await replica.run(spec(f"history.append('m{number}')\nlen(history)"))
        assert execution.results == [{"text": str(number)}], execution
    assert len(standin.creates) == 1
    assert standin.creates[0].executions == 20
    # a replica that dies leaves it to E2B's timer, which pauses it (state kept) rather than kill it
    assert standin.creates[0].auto_pause and standin.creates[0].auto_resume
    record = await SandboxDirectory(broker.bucket(names.SANDBOXES_BUCKET)).get("c1")
    assert record is not None and record.record.sandbox_id == standin.creates[0].sandbox_id
    assert record.record.state == "running" and not record.record.busy


async def test_a_replica_does_not_pause_a_sandbox_another_one_used_since(
    replicas: tuple[E2BSandbox, E2BSandbox], standin: E2BStandIn
) -> None:
    first, second = replicas
    await first.run(spec("x = 1", idle=1))  # first's idle timer: 1 s
    await second.run(spec("x += 1", idle=300))  # then second answered: its timer is 300 s
    await wait_until(lambda: first.sessions == 0, what="the first replica forgetting the sandbox")
    assert standin.pauses == [], "the first replica's timer must not pause what the second used since"
    assert (await first.run(spec("x"))).results == [{"text": "2"}]


async def test_a_paused_sandbox_is_resumed_by_another_replica_with_its_variables(
    replicas: tuple[E2BSandbox, E2BSandbox], standin: E2BStandIn
) -> None:
    first, second = replicas
    await first.run(spec("kept = {'answer': 42}", idle=1))
    await wait_until(lambda: standin.creates[0].state == "paused", what="the idle pause")
    execution = await second.run(spec("kept['answer']"))
    assert execution.results == [{"text": "42"}]
    assert standin.resumes == [standin.creates[0].sandbox_id]
    assert standin.kills == []


async def test_shutdown_of_one_replica_pauses_and_the_other_carries_on(
    replicas: tuple[E2BSandbox, E2BSandbox], standin: E2BStandIn
) -> None:
    first, second = replicas
    await first.run(spec("state = 'before the rollout'"))
    await first.aclose()
    [sandbox] = standin.creates
    assert sandbox.state == "paused" and standin.kills == []
    assert (await second.run(spec("state"))).results == [{"text": "'before the rollout'"}]


async def test_a_paused_sandbox_is_killed_after_its_retention(standin: E2BStandIn, broker: Broker) -> None:
    backend = e2b_backend(broker, upkeep_seconds=0.2)
    try:
        await backend.run(spec("x = 'old'", idle=1, retention=3))
        [sandbox] = standin.creates
        await wait_until(lambda: sandbox.state == "paused", what="the idle pause")
        await wait_until(lambda: sandbox.sandbox_id in standin.kills, what="the kill after retention")
        assert await SandboxDirectory(broker.bucket(names.SANDBOXES_BUCKET)).get("c1") is None
        # the conversation's next message gets a fresh sandbox
        execution = await backend.run(spec("print('x' in dir())"))
        assert execution.stdout == "False\n"
        assert len(standin.creates) == 2
    finally:
        await backend.aclose()


async def test_without_its_replica_e2b_pauses_the_sandbox_when_its_lifetime_ends(
    standin: E2BStandIn, broker: Broker
) -> None:
    crashed = e2b_backend(broker)
    await crashed.run(spec("kept = 'through the crash'"))
    [sandbox] = standin.creates
    crashed._keeper.cancel()  # the replica is gone: no idle timer, no shutdown
    for session in crashed._sessions.values():
        assert session.reaper is not None
        session.reaper.cancel()
    sandbox.expires_at = time.monotonic()  # its lifetime runs out now rather than in minutes
    await wait_until(lambda: sandbox.state == "paused", what="E2B's pause on timeout")
    assert standin.kills == []
    survivor = e2b_backend(broker)
    try:
        assert (await survivor.run(spec("kept"))).results == [{"text": "'through the crash'"}]
    finally:
        await survivor.aclose()
        await crashed.directory.aclose()


async def test_a_sandbox_in_use_is_not_killed_by_retention(standin: E2BStandIn, broker: Broker) -> None:
    backend = e2b_backend(broker, upkeep_seconds=0.1)
    try:
        await backend.run(spec("x = 1", retention=10))
        execution = await backend.run(spec("import time\ntime.sleep(1.5)\nx", retention=10))
        assert execution.results == [{"text": "1"}]
        assert standin.kills == []
    finally:
        await backend.aclose()


async def test_idle_sandboxes_are_bounded_per_tenant_least_recently_used_first(
    e2b: E2BSandbox, standin: E2BStandIn
) -> None:
    await e2b.run(spec("1", client="other", tenant="globex", max_idle=1, max_paused=1))
    for client in ("a", "b", "c"):
        await e2b.run(spec("1", client=client, tenant="acme", max_idle=1, max_paused=1))
    by_client = {sandbox.metadata["clientId"]: sandbox for sandbox in standin.creates}
    await wait_until(lambda: by_client["a"].killed and by_client["b"].state == "paused",
                     what="the tenant's bounds")
    assert by_client["c"].state == "running" and not by_client["c"].killed, "the most recent one stays"
    assert by_client["other"].state == "running" and not by_client["other"].killed, "other tenants' stay"
    # the paused one comes back with a message, the killed one starts over
    assert (await e2b.run(spec("print('ok')", client="b", tenant="acme"))).stdout == "ok\n"
    assert by_client["b"].sandbox_id in standin.resumes


async def publish_pool(broker: Broker, policies: PolicyCache, size: int, *, internet: bool = False) -> None:
    await publish_policy(broker.bucket(names.POLICIES_BUCKET),
                         SandboxPolicy(tenant="*", e2b_warm_pool=size, allow_internet=internet))
    await wait_until(lambda: any(policy.e2b_warm_pool == size for policy in policies.all()), what="the policy")


async def test_a_new_conversation_claims_a_warm_sandbox_and_the_pool_refills(
    standin: E2BStandIn, broker: Broker, policies: PolicyCache
) -> None:
    await publish_pool(broker, policies, 2)
    hits_before = REGISTRY.get_sample_value("athenic_orchestrator_e2b_pool_claims_total", {"outcome": "hit"}) or 0
    backend = e2b_backend(broker, policies, upkeep_seconds=0.2)
    try:
        await ready_slots(backend, 2)
        warm = list(pooled(standin))
        assert all(sandbox.executions == 0 for sandbox in warm), "a pooled sandbox has never run code"
        execution = await backend.run(spec("print('first')", client="new"))
        assert execution.stdout == "first\n"
        claimed = [sandbox for sandbox in warm if sandbox.executions == 1]
        assert len(claimed) == 1, "the first run used a warm sandbox"
        assert claimed[0].lifetimes[-1] == 300 + 20 + 60, "the conversation's lifetime, not the pool's"
        assert [sandbox for sandbox in standin.creates if "clientId" in sandbox.metadata] == []
        assert backend.pool.hits == 1
        hits = REGISTRY.get_sample_value("athenic_orchestrator_e2b_pool_claims_total", {"outcome": "hit"})
        assert hits == hits_before + 1, "the claim is counted on /metrics"
        await wait_until(lambda: len(pooled(standin)) == 3, what="the pool refilled")
        directory = SandboxDirectory(broker.bucket(names.SANDBOXES_BUCKET))
        for _ in range(200):
            slots = await directory.all_slots()
            if len([slot for slot in slots if slot.slot.state == "ready"]) == 2:
                break
            await asyncio.sleep(0.05)
        assert sorted(slot.slot.state for slot in slots) == ["ready", "ready"]
        assert claimed[0].sandbox_id not in {slot.slot.sandbox_id for slot in slots}
    finally:
        await backend.aclose()
    assert standin.running == [] and standin.kills == [], "shutdown pauses the pool and the conversation"


async def test_two_replicas_never_claim_one_warm_sandbox(
    standin: E2BStandIn, broker: Broker, policies: PolicyCache
) -> None:
    await publish_pool(broker, policies, 3)
    first, second = e2b_backend(broker, policies), e2b_backend(broker, policies)
    try:
        await ready_slots(first, 3)
        await ready_slots(second, 3)
        await asyncio.gather(*((first, second)[n % 2].run(spec("x = 1", client=f"conv{n}")) for n in range(6)))
        used = [sandbox for sandbox in standin.creates if sandbox.executions > 0]
        assert len(used) == 6 and all(sandbox.executions == 1 for sandbox in used), "one conversation each"
        assert first.pool.hits + second.pool.hits >= 1
    finally:
        await first.aclose()
        await second.aclose()


async def test_pool_creation_failures_never_block_a_message(
    broker: Broker, policies: PolicyCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    class PoolFails(E2BStandIn):
        """Every creation for the pool fails with 503; a conversation's own creation works."""

        pool_attempts = 0

        async def _create(self, request: web.Request) -> web.Response:
            if "pool" in ((await request.json()).get("metadata") or {}):
                self.pool_attempts += 1
                return web.json_response({"code": 503, "message": "stand-in: no capacity"}, status=503)
            return await super()._create(request)

    async with PoolFails() as standin:
        monkeypatch.setenv("E2B_API_URL", standin.url)
        monkeypatch.setenv("E2B_SANDBOX_URL", standin.url)
        await publish_pool(broker, policies, 2)
        backend = e2b_backend(broker, policies, upkeep_seconds=0.2)
        try:
            await wait_until(lambda: standin.pool_attempts >= 4, what="pool creations retried")
            execution = await backend.run(spec("print('answered')", client="first"))
            assert execution.stdout == "answered\n"
            assert backend.pool.misses == 1
            assert len(standin.creates) == 1 and standin.creates[0].metadata["clientId"] == "first"
        finally:
            await backend.aclose()


async def test_the_pool_honours_the_internet_setting(
    standin: E2BStandIn, broker: Broker, policies: PolicyCache
) -> None:
    await publish_pool(broker, policies, 1, internet=True)
    backend = e2b_backend(broker, policies)
    try:
        await ready_slots(backend, 1)
        assert pooled(standin)[0].allow_internet is True
        # a tenant without internet access never gets the pooled (online) sandbox
        await backend.run(spec("1", client="offline", internet=False))
        assert pooled(standin)[0].executions == 0
        assert standin.creates[-1].allow_internet is False
    finally:
        await backend.aclose()
