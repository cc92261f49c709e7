"""Response records against a real nats-server: ordered by stream sequence, first final answer wins."""

from __future__ import annotations

import msgspec
import nats

from athenic.orchestrator.records import RecordStore
from athenic.shared import names
from athenic.shared.messages import ChatResponse, ResponseRecord, Status
from athenic.shared.settings import NatsSettings, load
from athenic.shared.topology import ensure_topology


def record(seq: int, status: Status, text: str) -> ResponseRecord:
    response = ChatResponse(message=text, requires_e2b=False, client_id="c", timestamp="t", request_id=f"r{seq}",
                            status=status)
    return ResponseRecord(last_message=f"m{seq}", last_response=response, requires_e2b=False, status=status,
                          request_id=f"r{seq}", seq=seq, updated_at="t")


async def test_ordering_and_one_final_answer_per_message(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        buckets = await ensure_topology(nc.jetstream(), load(NatsSettings, {"NATS_URL": nats_url}))
        store = RecordStore(buckets[names.RESPONSES_BUCKET])
        assert await store.write("c", 5, lambda _: record(5, "processing", "")) is not None
        assert await store.write("c", 5, lambda _: record(5, "completed", "first")) is not None
        # a second delivery of message 5 that ran too (e.g. across a leader election) answers nothing
        assert await store.write("c", 5, lambda _: record(5, "processing", "")) is None
        assert await store.write("c", 5, lambda _: record(5, "completed", "second")) is None
        # the same request stored twice (another stream sequence) is not answered again
        again = record(6, "processing", "")
        again = msgspec.structs.replace(again, request_id="r5")
        assert await store.write("c", 6, lambda _: again) is None
        # an earlier message finishing late never replaces the answer about a later one
        assert await store.write("c", 7, lambda _: record(7, "completed", "seven")) is not None
        assert await store.write("c", 6, lambda _: record(6, "completed", "six")) is None
        current, _ = await store.current("c")
        assert current is not None
        assert current.seq == 7
        assert current.last_response is not None
        assert current.last_response.message == "seven"
    finally:
        await nc.close()
