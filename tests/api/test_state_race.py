"""GET never answers 404 for an accepted message, however the orchestrator's work interleaves.

The orchestrator writes the record, then acks (which removes the message from the stream).
``ChatService.state`` reads both; this test finishes the message (record written, message
acked, against the real broker) exactly between the two reads, whichever comes first.
"""

from __future__ import annotations

from typing import Any

import pytest

from athenic.api.chat_service import ChatService
from athenic.api.identity import ANONYMOUS
from athenic.api.settings import ApiSettings
from athenic.orchestrator.records import Outcome, RecordStore, final_response
from athenic.shared import names
from athenic.shared.broker import Broker
from athenic.shared.messages import chat_request_decoder
from athenic.shared.settings import NatsSettings, load

pytestmark = pytest.mark.integration


class FinishBetweenReads(ChatService):
    """The service as it is, with the orchestrator's completion slipped in after its first read."""

    finish: Any = None

    async def _between(self) -> None:
        if self.finish is not None:
            finish, self.finish = self.finish, None
            await finish()

    async def _pending(self, client_id: str) -> Any:
        result = await super()._pending(client_id)
        await self._between()
        return result

    @staticmethod
    async def _record(kv: Any, client_id: str) -> Any:
        result = await ChatService._record(kv, client_id)
        await FinishBetweenReads._current._between()
        return result

    _current: FinishBetweenReads


@pytest.mark.parametrize("attempt", range(3))
async def test_a_message_answered_between_the_reads_is_never_404(nats_url: str, attempt: int) -> None:
    nats_settings = load(NatsSettings, {"NATS_URL": nats_url})
    broker = Broker(nats_settings, name="test")
    await broker.start()
    await broker.wait_ready(10)
    service = FinishBetweenReads(broker, load(ApiSettings, {"ATHENIC_RATE_LIMIT_PER_MINUTE": "0"}))
    FinishBetweenReads._current = service
    try:
        client_id = (await service.accept("hi", None, ANONYMOUS, f"req{attempt}")).client_id
        psub = await broker.js.pull_subscribe_bind(durable=names.ORCHESTRATOR_CONSUMER, stream=names.REQUEST_STREAM)
        [msg] = await psub.fetch(1, timeout=5)
        request = chat_request_decoder.decode(msg.data)
        store = RecordStore(broker.bucket(names.RESPONSES_BUCKET), service.log)

        async def finish() -> None:  # what the worker does at the end: write, then ack
            response = final_response(request, Outcome("completed", message="hello"), [])
            await store.finish(request, msg.metadata.sequence.stream, response, None)
            await msg.ack_sync()

        service.finish = finish
        state = await service.state(client_id, ANONYMOUS)
        assert service.finish is None, "the completion did not run between the reads"
        assert state.last_message == "hi"
        await psub.unsubscribe()
    finally:
        await broker.close()


async def test_the_finish_hook_really_runs_between_reads(nats_url: str) -> None:
    """Guard: without the hook the same message is simply pending (the test above is not vacuous)."""
    broker = Broker(load(NatsSettings, {"NATS_URL": nats_url}), name="test")
    await broker.start()
    await broker.wait_ready(10)
    try:
        service = ChatService(broker, load(ApiSettings, {}))
        client_id = (await service.accept("hi", None, ANONYMOUS, "req")).client_id
        assert (await service.state(client_id, ANONYMOUS)).status == "pending"
    finally:
        await broker.close()
