"""Response records and the conversation log against a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import nats
import nats.errors
import pytest

from athenic.orchestrator.errors import refused_as_too_large
from athenic.orchestrator.records import Outcome, RecordStore, final_response, stored_size
from athenic.shared import names
from athenic.shared.conversations import ConversationLog
from athenic.shared.messages import ChatRequest
from athenic.shared.settings import NatsSettings, load
from athenic.shared.topology import ensure_topology
from tests.support.nats import NatsServer

pytestmark = pytest.mark.integration


def request(seq: int, request_id: str | None = None, client_id: str = "c") -> ChatRequest:
    return ChatRequest(request_id=request_id or f"r{seq}", client_id=client_id, message=f"m{seq}",
                       submitted_at="2026-01-01T00:00:00.000Z")


def answer(req: ChatRequest, text: str) -> Outcome:
    return Outcome("completed", message=text)


@pytest.fixture
async def store(nats_url: str) -> AsyncIterator[RecordStore]:
    nc = await nats.connect(nats_url)
    try:
        settings = load(NatsSettings, {"NATS_URL": nats_url, "ATHENIC_TURNS_PER_CONVERSATION": "3"})
        buckets = await ensure_topology(nc.jetstream(), settings)
        log = ConversationLog(buckets[names.CONVERSATIONS_BUCKET], buckets[names.TURNS_BUCKET], nc.jetstream(),
                              keep=settings.athenic_turns_per_conversation)
        yield RecordStore(buckets[names.RESPONSES_BUCKET], log)
    finally:
        await nc.close()


async def test_ordering_and_one_final_answer_per_message(store: RecordStore) -> None:
    five = request(5)
    stored = await store.start(five, 5, await store.current("c"))
    assert stored is not None
    assert await store.finish(five, 5, final_response(five, answer(five, "first"), []), stored)
    # a second delivery of message 5 that ran too (e.g. across a leader election) answers nothing
    assert await store.start(five, 5, await store.current("c")) is None
    assert not await store.finish(five, 5, final_response(five, answer(five, "second"), []), None)
    # the same request stored twice (another stream sequence) is not answered again
    assert await store.start(request(6, request_id="r5"), 6, await store.current("c")) is None
    # an earlier message finishing late never replaces the answer about a later one
    seven, six = request(7), request(6)
    assert await store.finish(seven, 7, final_response(seven, answer(seven, "seven"), []), None)
    assert not await store.finish(six, 6, final_response(six, answer(six, "six"), []), None)
    current, _ = await store.current("c")
    assert current is not None and current.seq == 7
    assert current.last_response is not None and current.last_response.message == "seven"


async def test_a_turn_is_logged_once_and_old_turns_are_dropped(store: RecordStore) -> None:
    log = store.log
    for n in range(1, 6):
        req = request(n, client_id="d")
        response = final_response(req, answer(req, f"answer {n}"), [])
        assert await store.append_turn(req, response) == n
        # a redelivery after a crash between the log write and the ack counts nothing twice
        assert await store.append_turn(req, response) == n
    conversation, _ = await log.conversation("d")
    assert conversation is not None and conversation.turns == 5
    kept = await log.finished("d", range(1, 6))
    assert sorted(kept) == [3, 4, 5]  # ATHENIC_TURNS_PER_CONVERSATION=3
    assert [t.response.message for t in await log.recent("d", conversation, 2) if t.response] == [
        "answer 4", "answer 5"]


async def test_a_record_over_the_servers_max_payload_is_refused_as_too_large(tmp_path: Path) -> None:
    config = tmp_path / "nats.conf"
    config.write_text("max_payload: 16384\n")
    async with NatsServer(tmp_path / "jetstream", extra_args=["-c", str(config)]) as server:
        nc = await nats.connect(server.url)
        try:
            settings = load(NatsSettings, {"NATS_URL": server.url})
            buckets = await ensure_topology(nc.jetstream(), settings)
            log = ConversationLog(buckets[names.CONVERSATIONS_BUCKET], buckets[names.TURNS_BUCKET],
                                  nc.jetstream(), keep=10)
            store = RecordStore(buckets[names.RESPONSES_BUCKET], log, max_bytes=8192)
            big = request(1)
            response = final_response(big, answer(big, "z" * 20_000), [])
            with pytest.raises(nats.errors.Error) as refused:
                await store.finish(big, 1, response, None)
            # the worker's test of "never retry this"
            assert refused_as_too_large(refused.value)
            # fitted to the budget, the same answer is stored
            fitted = store.fit(big, 1, response)
            assert stored_size(big, 1, fitted) <= 8192
            assert await store.finish(big, 1, fitted, None)
            current, _ = await store.current("c")
            assert current is not None and current.last_response is not None and current.last_response.truncated
        finally:
            await nc.close()

