"""The lease store under a storm of admissions: three connections (as three replicas), eight
callers on each, against a real nats-server; the holders are counted outside the store."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import pytest
from nats.aio.client import Client

from athenic.orchestrator.leases import RESERVE_UNITS, Full, Lease, LeaseStore
from athenic.shared import names
from athenic.shared.quota_keys import decode_lease, decode_slots, slots_key
from athenic.shared.settings import NatsSettings
from athenic.shared.topology import ensure_topology
from athenic_operator.usage import read_usage
from tests.support.nats import NatsServer

pytestmark = pytest.mark.integration

LIMIT = 2


Replicas = Callable[[int], Awaitable[list[LeaseStore]]]


@pytest.fixture
async def replicas(nats_server: NatsServer) -> AsyncIterator[Replicas]:
    """``await replicas(n)``: n lease stores on connections of their own (as n replicas), closed after the test."""
    connections: list[Client] = []
    stores: list[LeaseStore] = []

    async def open_stores(count: int) -> list[LeaseStore]:
        for i in range(count):
            nc = await nats.connect(nats_server.url)
            connections.append(nc)
            buckets = await ensure_topology(nc.jetstream(), NatsSettings(nats_url=nats_server.url))
            stores.append(LeaseStore(nc.jetstream(), buckets[names.LEASES_BUCKET], ttl_seconds=10, holder=f"r{i}"))
        return stores[-count:]

    yield open_stores
    await asyncio.gather(*(store.aclose() for store in stores))
    for nc in connections:
        await nc.close()


async def test_racing_admissions_never_exceed_the_limit(replicas: Replicas) -> None:
    stores = await replicas(3)
    holding = peak = admitted = refused = 0
    deadline = time.monotonic() + 4

    # (the callers of one store meet in its writes: admissions and releases written together)
    async def caller(store: LeaseStore) -> None:
        nonlocal holding, peak, admitted, refused
        while time.monotonic() < deadline:
            lease = await store.try_acquire("storm", LIMIT)
            if not isinstance(lease, Lease):
                refused += 1
                await asyncio.sleep(random.uniform(0, 0.002))
                continue
            admitted += 1
            holding += 1
            peak = max(peak, holding)
            await asyncio.sleep(random.uniform(0, 0.004))
            holding -= 1  # counted as ended before the release is sent
            await store.release(lease)

    await asyncio.gather(*(caller(store) for store in stores for _ in range(8)))
    print(f"{admitted} admissions, {refused} refusals, peak {peak} holders (limit {LIMIT})")
    assert admitted > 50
    assert peak == LIMIT


async def test_racing_admissions_take_exactly_the_minute_limit(replicas: Replicas) -> None:
    stores = await replicas(3)
    await in_one_minute()

    async def once(store: LeaseStore) -> Lease | Full:
        outcome = await store.try_acquire("burst", 1000, per_minute=25)
        if isinstance(outcome, Lease):
            await store.release(outcome)  # a finished run still counts in its minute
        return outcome

    results = await asyncio.gather(*(once(store) for store in stores for _ in range(20)))
    assert sum(isinstance(result, Lease) for result in results) == 25
    assert all(result.retry_in is not None and 0 < result.retry_in <= 60
               for result in results if isinstance(result, Full))


async def test_a_lease_lost_while_its_run_went_on_counts_again_once_rewritten(replicas: Replicas) -> None:
    stores = await replicas(2)
    cut_off, other_replica = stores
    cut_off.ttl = 1  # the shortest per-message TTL NATS takes
    stalled = await cut_off.try_acquire("stall", 1)
    assert isinstance(stalled, Lease)
    await asyncio.sleep(2.5)  # no rewrite: the lease expires, as when a replica is cut off
    other = await other_replica.try_acquire("stall", 1)
    assert isinstance(other, Lease), "an expired lease no longer holds the slot"
    cut_off.ttl = 10
    await cut_off.refresh(stalled)  # the cut-off replica is back and its run still goes on
    assert await other_replica.try_acquire("stall", 1) == Full(), "both running executions count again"
    await other_replica.release(other)
    assert await other_replica.try_acquire("stall", 1) == Full(), "the recovered one still holds the slot"
    await cut_off.release(stalled)
    assert isinstance(await other_replica.try_acquire("stall", 1), Lease)


async def test_a_replica_that_saw_the_tenant_full_asks_again_before_refusing(replicas: Replicas) -> None:
    stores = await replicas(2)
    here, elsewhere = stores
    first = await here.try_acquire("busy", 1)
    assert isinstance(first, Lease)
    await elsewhere.release(first)  # the slot is given back where this replica does not see it
    assert isinstance(await here.try_acquire("busy", 1), Lease), "refused on a list that is no longer there"


async def test_an_admission_on_an_old_view_keeps_what_others_admitted_since(replicas: Replicas) -> None:
    stores = await replicas(2)
    here, elsewhere = stores
    mine = await here.try_acquire("shared", 3)
    theirs = await elsewhere.try_acquire("shared", 3)  # this replica's view of the list is now behind
    again = await here.try_acquire("shared", 3)
    assert isinstance(mine, Lease) and isinstance(theirs, Lease) and isinstance(again, Lease)
    entry = await here.kv.get(slots_key("shared"))
    assert decode_slots(entry.value).leases == [mine.lease_id, theirs.lease_id, again.lease_id]
    assert await elsewhere.try_acquire("shared", 3) == Full()


async def test_a_busy_tenant_on_one_replica_is_admitted_in_shared_writes(replicas: Replicas) -> None:
    stores = await replicas(1)
    [store] = stores
    first = await store.try_acquire("busy", 100)
    assert isinstance(first, Lease)
    before = (await store.kv.get(slots_key("busy"))).revision or 0
    leases = await asyncio.gather(*(store.try_acquire("busy", 100) for _ in range(40)))
    assert all(isinstance(lease, Lease) for lease in leases)
    entry = await store.kv.get(slots_key("busy"))
    listed = decode_slots(entry.value).leases
    assert sorted(listed) == sorted([first.lease_id, *(lease.lease_id for lease in leases
                                                       if isinstance(lease, Lease))])
    # each admission makes (at least) its lease key: far fewer bucket writes than one list write each
    written = (entry.revision or 0) - before
    print(f"40 concurrent admissions: {written} writes to the bucket")
    assert written < 2 * 40
    await asyncio.gather(*(store.release(lease) for lease in leases if isinstance(lease, Lease)))
    assert decode_slots((await store.kv.get(slots_key("busy"))).value).leases == [first.lease_id]


async def test_an_admission_no_run_used_is_not_counted_in_its_minute(replicas: Replicas) -> None:
    stores = await replicas(1)
    [store] = stores
    await in_one_minute()
    ahead = await store.try_acquire("metered", 10, per_minute=1)
    assert isinstance(ahead, Lease)
    await store.release(ahead, unused=True)  # admitted ahead of a run that never came
    ran = await store.try_acquire("metered", 10, per_minute=1)
    assert isinstance(ran, Lease), "the unused admission still took the minute's only execution"
    await store.release(ran)  # a run that ran counts for the rest of its minute
    refused = await store.try_acquire("metered", 10, per_minute=1)
    assert isinstance(refused, Full) and refused.retry_in is not None


async def in_one_minute() -> None:
    """Return when the next few seconds fall in one minute (what a test counts must not straddle two)."""
    while time.time() % 60 > 55:
        await asyncio.sleep(0.5)


async def parked(store: LeaseStore, tenant: str) -> Lease:
    """A lease of ``tenant`` admitted with a reserve (a roomy minute) whose run ended: parked."""
    lease = await store.try_acquire(tenant, 4, per_minute=10_000)
    assert isinstance(lease, Lease)
    await store.finish(lease)
    return lease


async def test_a_replica_runs_a_tenant_again_on_its_parked_lease_without_writing_the_list(replicas: Replicas) -> None:
    [store] = await replicas(1)
    await in_one_minute()
    first = await store.try_acquire("chatty", 4, per_minute=10_000)
    assert isinstance(first, Lease) and first.value.reserve == RESERVE_UNITS
    await store.finish(first)
    listed = await store.kv.get(slots_key("chatty"))
    parked = decode_lease((await store.kv.get(first.key)).value)
    assert parked.parked and not parked.admitted and parked.reserve == RESERVE_UNITS
    again = await store.try_acquire("chatty", 4, per_minute=10_000)
    assert isinstance(again, Lease) and again.lease_id == first.lease_id
    assert decode_lease((await store.kv.get(again.key)).value).admitted, "the operator counts it as running"
    assert (await store.kv.get(slots_key("chatty"))).revision == listed.revision, "no write of the list"
    await store.finish(again)
    # the operator's count of the minute: what the list counted, less what the live leases still reserve
    usage = await read_usage(store.kv)
    assert usage.this_minute.get("chatty") == 2 and usage.concurrent.get("chatty", 0) == 0


async def test_a_parked_lease_is_released_when_no_run_claims_it(replicas: Replicas) -> None:
    [store] = await replicas(1)
    store.park_seconds = 0.2
    await in_one_minute()
    await parked(store, "quiet")
    deadline = time.monotonic() + 5
    while decode_slots((await store.kv.get(slots_key("quiet"))).value).leases:
        assert time.monotonic() < deadline, "the parked lease was never released"
        await asyncio.sleep(0.05)
    slots = decode_slots((await store.kv.get(slots_key("quiet"))).value)
    assert slots.started == 1, "what it reserved went back to the minute"


async def test_an_admission_elsewhere_takes_back_a_parked_lease_rather_than_refuse(replicas: Replicas) -> None:
    here, elsewhere = await replicas(2)
    await in_one_minute()
    running = await here.try_acquire("pair", 2, per_minute=10_000)
    idle = await here.try_acquire("pair", 2, per_minute=10_000)
    assert isinstance(running, Lease) and isinstance(idle, Lease)
    await here.release(running)  # the list now has room: the next run's end parks its lease
    await here.finish(idle)
    assert (await here.kv.get(idle.key)).value and decode_lease((await here.kv.get(idle.key)).value).parked
    first = await elsewhere.try_acquire("pair", 2, per_minute=10_000)
    second = await elsewhere.try_acquire("pair", 2, per_minute=10_000)
    assert isinstance(first, Lease) and isinstance(second, Lease), "a parked lease runs nothing: it gives way"
    assert await here.try_acquire("pair", 2, per_minute=10_000) == Full(), "and its holder cannot claim it back"
    slots = decode_slots((await here.kv.get(slots_key("pair"))).value)
    assert sorted(slots.leases) == sorted([first.lease_id, second.lease_id])
    # counted: the four admissions and the two reserves still held; the taken-back reserve was given back
    assert slots.started == 4 + 2 * RESERVE_UNITS


async def test_racing_runs_with_parked_leases_take_exactly_the_minute_limit(replicas: Replicas) -> None:
    stores = await replicas(3)
    per_minute = RESERVE_UNITS * (LIMIT + 2) * 3  # room to reserve at first, none near the end
    while time.time() % 60 > 50:  # the runs must not straddle two minutes
        await asyncio.sleep(0.5)
    ran = refused = 0

    async def caller(store: LeaseStore) -> None:
        nonlocal ran, refused
        for _ in range(per_minute):
            outcome = await store.try_acquire("parking", LIMIT, per_minute=per_minute)
            if not isinstance(outcome, Lease):
                refused += 1
                if outcome.retry_in is not None:
                    return
                await asyncio.sleep(random.uniform(0, 0.002))
                continue
            ran += 1
            await asyncio.sleep(random.uniform(0, 0.002))
            await store.finish(outcome)

    await asyncio.gather(*(caller(store) for store in stores for _ in range(3)))
    print(f"{ran} runs, {refused} refusals (limit {per_minute} a minute)")
    assert ran == per_minute


async def test_a_parked_lease_is_not_claimed_under_limits_lowered_below_the_list(replicas: Replicas) -> None:
    [store] = await replicas(1)
    await in_one_minute()
    lease = await parked(store, "tightened")
    # the policy now allows fewer executions this minute than the list counts with the reserve
    lowered = await store.try_acquire("tightened", 4, per_minute=5)
    assert isinstance(lowered, Lease) and lowered.lease_id != lease.lease_id, "the reserve is void under the new limit"
    assert lowered.value.reserve == 0, "and none is taken near the limit"
    slots = decode_slots((await store.kv.get(slots_key("tightened"))).value)
    assert slots.started == 2 and slots.leases == [lowered.lease_id], "the parked lease went with its reserve"
    for _ in range(3):
        admitted = await store.try_acquire("tightened", 4, per_minute=5)
        assert isinstance(admitted, Lease)
        await store.finish(admitted)
    assert isinstance(await store.try_acquire("tightened", 4, per_minute=5), Full), "five ran: the new limit holds"


async def test_shutdown_gives_the_parked_leases_back(replicas: Replicas) -> None:
    [store] = await replicas(1)
    await in_one_minute()
    await parked(store, "leaving")
    await store.aclose()  # (a rollout: the replica stops well before its parked lease would go)
    slots = decode_slots((await store.kv.get(slots_key("leaving"))).value)
    assert slots.leases == [] and slots.started == 1
    usage = await read_usage(store.kv)
    assert usage.concurrent.get("leaving", 0) == 0 and usage.this_minute.get("leaving") == 1
