"""Delta events through a real nats-server: coalesced, in order with other events, exact in sum."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import pytest
from nats.aio.msg import Msg

from athenic.orchestrator.events import DELTA_INTERVAL_SECONDS, EventPublisher
from athenic.shared import names
from athenic.shared.broker import Broker
from athenic.shared.settings import NatsSettings, load

pytestmark = pytest.mark.integration


@asynccontextmanager
async def listening(nats_url: str, client_id: str) -> AsyncIterator[tuple[Broker, list[dict[str, Any]]]]:
    broker = Broker(load(NatsSettings, {"NATS_URL": nats_url}), name="test")
    await broker.start()
    await broker.wait_ready(10)
    got: list[dict[str, Any]] = []

    async def on_event(msg: Msg) -> None:
        got.append(json.loads(msg.data))

    sub = await broker.nc.subscribe(names.event_subject(client_id), cb=on_event)
    try:
        yield broker, got
    finally:
        await sub.unsubscribe()
        await broker.close()


async def settled(got: list[dict[str, Any]], count: int) -> None:
    async with asyncio.timeout(10):
        while len(got) < count:
            await asyncio.sleep(0.01)


def at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


async def test_a_fast_writer_is_coalesced_and_the_text_stays_exact(nats_url: str) -> None:
    async with listening(nats_url, "fast") as (broker, got):
        events = EventPublisher(broker, "fast", "req-1")
        pieces = [f"w{i} " for i in range(3000)]
        for number, piece in enumerate(pieces):
            await events.delta(piece)
            if number == 1500:
                await events.phase("running")  # text written before it must arrive before it
            if number % 10 == 0:
                await asyncio.sleep(0.001)  # a model streaming: ~0.3 s of tokens
        final = "".join(pieces)
        assert events.settled(final) == final  # it was all streamed: nothing to add
        await events.conclude(final)
        await broker.nc.flush()
        async with asyncio.timeout(10):
            while "".join(e.get("text", "") for e in got) != final:
                await asyncio.sleep(0.01)

    deltas = [e for e in got if e["type"] == "delta"]
    assert [d["index"] for d in deltas] == list(range(len(deltas)))
    assert all(set(d) == {"type", "clientId", "requestId", "timestamp", "text", "index"} for d in deltas)
    status = next(i for i, e in enumerate(got) if e["type"] == "status")
    assert "".join(e["text"] for e in got[:status]) == "".join(pieces[:1501])
    assert got[status]["phase"] == "running"
    # one frame per interval at most, but for the one sent early because the status followed it
    early = status - 1  # (all events before the status are deltas)
    gaps = [at(deltas[i]) - at(deltas[i - 1]) for i in range(1, len(deltas)) if i != early]
    assert min(gaps) >= DELTA_INTERVAL_SECONDS - 0.002, gaps  # timestamps have ms resolution
    assert len(deltas) < 100, len(deltas)


async def test_what_was_not_streamed_is_sent_before_the_record(nats_url: str) -> None:
    async with listening(nats_url, "ends") as (broker, got):
        # a planner that streams nothing (rules): its whole answer as one delta
        whole = EventPublisher(broker, "ends", "req-rules")
        assert whole.settled("I ran your python code.") == "I ran your python code."
        await whole.conclude("I ran your python code.")
        # a streamed part, then a failure whose text does not continue it: nothing is taken back
        partial = EventPublisher(broker, "ends", "req-failed")
        await partial.delta("Let me comp")
        kept = partial.settled("Sorry, I could not answer this message: boom")
        assert kept == "Let me comp\n\nSorry, I could not answer this message: boom"
        await partial.conclude(kept)
        # streamed, then a note added after it (the record budget's)
        noted = EventPublisher(broker, "ends", "req-noted")
        await noted.delta("The first part")
        assert noted.settled("The first part") == "The first part"
        await noted.conclude("The first part\n\n(cut)")
        # streamed, then cut shorter by the record budget: nothing more is sent
        cut = EventPublisher(broker, "ends", "req-cut")
        await cut.delta("A very long answer")
        await cut.conclude("A very [... cut ...] answer")
        await broker.nc.flush()
        await settled(got, 6)

    by_request: dict[str, str] = {}
    for event in got:
        assert event["type"] == "delta"
        by_request[event["requestId"]] = by_request.get(event["requestId"], "") + event["text"]
    assert by_request == {"req-rules": "I ran your python code.", "req-failed": kept,
                          "req-noted": "The first part\n\n(cut)", "req-cut": "A very long answer"}
    assert [e["index"] for e in got if e["requestId"] == "req-rules"] == [0]
