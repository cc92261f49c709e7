"""The lease store under a storm of admissions: three connections (as three replicas), eight
callers on each, against a real nats-server; the holders are counted outside the store."""

from __future__ import annotations

import asyncio
import random
import time

import nats
import pytest
from nats.aio.client import Client

from athenic.orchestrator.leases import LeaseStore
from athenic.orchestrator.rate import RateCounter
from athenic.shared import names
from athenic.shared.settings import NatsSettings
from athenic.shared.topology import ensure_topology
from tests.support.nats import NatsServer

pytestmark = pytest.mark.integration

LIMIT = 2


async def _stores(url: str, count: int) -> tuple[list[Client], list[LeaseStore]]:
    connections = [await nats.connect(url) for _ in range(count)]
    stores = []
    for i, nc in enumerate(connections):
        buckets = await ensure_topology(nc.jetstream(), NatsSettings(nats_url=url))
        stores.append(LeaseStore(nc.jetstream(), buckets[names.LEASES_BUCKET], ttl_seconds=10, holder=f"r{i}"))
    return connections, stores


async def test_racing_admissions_never_exceed_the_limit(nats_server: NatsServer) -> None:
    connections, stores = await _stores(nats_server.url, 3)
    holding = peak = admitted = refused = 0
    deadline = time.monotonic() + 4

    # as QuotaGate does: one attempt at a time per tenant and replica; releases are not serialised
    attempting = {id(store): asyncio.Lock() for store in stores}

    async def caller(store: LeaseStore) -> None:
        nonlocal holding, peak, admitted, refused
        while time.monotonic() < deadline:
            async with attempting[id(store)]:
                lease = await store.try_acquire("storm", LIMIT)
            if lease is None:
                refused += 1
                await asyncio.sleep(random.uniform(0, 0.002))
                continue
            admitted += 1
            holding += 1
            peak = max(peak, holding)
            await asyncio.sleep(random.uniform(0, 0.004))
            holding -= 1  # counted as ended before the release is sent
            await store.release(lease)

    try:
        await asyncio.gather(*(caller(store) for store in stores for _ in range(8)))
    finally:
        for nc in connections:
            await nc.close()
    print(f"{admitted} admissions, {refused} refusals, peak {peak} holders (limit {LIMIT})")
    assert admitted > 50
    assert peak == LIMIT


async def test_racing_counters_take_exactly_the_limit(nats_server: NatsServer) -> None:
    connections, stores = await _stores(nats_server.url, 3)
    counters = [RateCounter(store.js, store.kv) for store in stores]
    while time.time() % 60 > 55:  # the burst must not straddle two minutes
        await asyncio.sleep(0.5)
    try:
        results = await asyncio.gather(*(counter.take("burst", 25) for counter in counters for _ in range(20)))
    finally:
        for nc in connections:
            await nc.close()
    assert sum(result is None for result in results) == 25
    assert all(0 < result <= 60 for result in results if result is not None)


async def test_a_lease_lost_while_its_run_went_on_counts_again_once_rewritten(nats_server: NatsServer) -> None:
    connections, [cut_off, other_replica] = await _stores(nats_server.url, 2)
    cut_off.ttl = 1  # the shortest per-message TTL NATS takes
    try:
        stalled = await cut_off.try_acquire("stall", 1)
        assert stalled is not None
        await asyncio.sleep(2.5)  # no rewrite: the lease expires, as when a replica is cut off
        other = await other_replica.try_acquire("stall", 1)
        assert other is not None, "an expired lease no longer holds the slot"
        cut_off.ttl = 10
        await cut_off.refresh(stalled)  # the cut-off replica is back and its run still goes on
        assert await other_replica.try_acquire("stall", 1) is None, "both running executions count again"
        await other_replica.release(other)
        assert await other_replica.try_acquire("stall", 1) is None, "the recovered one still holds the slot"
        await cut_off.release(stalled)
        assert await other_replica.try_acquire("stall", 1) is not None
    finally:
        for nc in connections:
            await nc.close()
