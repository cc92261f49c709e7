"""Progress events: status changes, output chunks and answer text, on a per-client core-NATS subject.

Events are best effort (the response record stays the source of truth): a failure to
publish one is logged and never fails the work. They are not persisted: a client that
connects later gets the record, never a replay.

Answer text (``delta`` events) is coalesced: at most one frame per ``DELTA_INTERVAL_SECONDS``
per message (a conversation answers one message at a time), the first at once; text still
pending is sent at once before any other event, so a client sees text, status and output in
the order they happened. ``settled`` and ``conclude`` make the final message and the deltas
agree: what the client has not seen of the record's message is sent before the record.
"""

from __future__ import annotations

import asyncio
from typing import Final, Literal

from athenic.shared import names
from athenic.shared.broker import Broker
from athenic.shared.logging import get_logger
from athenic.shared.messages import Phase, ProgressEvent, encode, iso_timestamp

log = get_logger(__name__)

# A model writes 20-100 tokens a second: one frame per 50 ms still reads as live, and a fast
# model (or a replayed answer) cannot flood sockets with a frame per token.
DELTA_INTERVAL_SECONDS: Final = 0.05
# Between the text a client saw stream and a final message that does not continue it (a
# failure or a cancel after part of the answer was written): a new paragraph.
PARAGRAPH: Final = "\n\n"


class EventPublisher:
    def __init__(self, broker: Broker, client_id: str, request_id: str,
                 delta_interval: float = DELTA_INTERVAL_SECONDS) -> None:
        self.broker = broker
        self.subject = names.event_subject(client_id)
        self.client_id = client_id
        self.request_id = request_id
        self.delta_interval = delta_interval
        self._written: list[str] = []  # every delta's text, sent or pending
        self._pending: list[str] = []
        self._deltas_sent = 0
        self._last_delta_at = float("-inf")
        self._timer: asyncio.Task[None] | None = None
        # one publisher at a time: the timer's flush and an event must not swap places
        self._lock = asyncio.Lock()

    @property
    def written(self) -> str:
        """The answer's text as the deltas so far give it."""
        return "".join(self._written)

    async def _publish(self, event: ProgressEvent) -> None:
        try:
            await self.broker.nc.publish(self.subject, encode(event))
        except Exception as exc:
            log.debug("progress event not published", error=str(exc))

    async def _event(self, event: ProgressEvent) -> None:
        async with self._lock:
            await self._flush_locked()
            await self._publish(event)

    async def phase(self, phase: Phase) -> None:
        await self._event(ProgressEvent(type="status", client_id=self.client_id, request_id=self.request_id,
                                        timestamp=iso_timestamp(), phase=phase))

    async def output(self, stream: str, chunk: str) -> None:
        kind: Literal["stdout", "stderr"] = "stderr" if stream == "stderr" else "stdout"
        await self._event(ProgressEvent(type=kind, client_id=self.client_id, request_id=self.request_id,
                                        timestamp=iso_timestamp(), data=chunk))

    async def delta(self, text: str) -> None:
        """The answer's next text: sent now if the last frame is old enough, else with the next one."""
        if not text:
            return
        self._written.append(text)
        self._pending.append(text)
        if self._timer is not None and not self._timer.done():
            return  # the timer sends it with what follows
        async with self._lock:  # decided under the lock: a flush in progress moves the time on
            wait = self._until_due()
            if wait <= 0:
                await self._flush_locked()
                return
        self._timer = asyncio.create_task(self._flush_after(wait))

    def _until_due(self) -> float:
        return self._last_delta_at + self.delta_interval - asyncio.get_running_loop().time()

    async def _flush_after(self, wait: float) -> None:
        while True:
            await asyncio.sleep(wait)
            async with self._lock:
                # an event may have flushed meanwhile: then the interval counts from that frame
                wait = self._until_due()
                if wait <= 0:
                    await self._flush_locked()
                    if not self._pending:  # text written while that frame went out goes next
                        return
                    wait = self.delta_interval

    async def _flush_locked(self) -> None:
        if not self._pending:
            return
        text, self._pending = "".join(self._pending), []
        index, self._deltas_sent = self._deltas_sent, self._deltas_sent + 1
        self._last_delta_at = asyncio.get_running_loop().time()
        await self._publish(ProgressEvent(type="delta", client_id=self.client_id, request_id=self.request_id,
                                          timestamp=iso_timestamp(), text=text, index=index))

    def settled(self, message: str) -> str:
        """The final message such that the deltas make it.

        That is ``message`` itself when it continues the text streamed so far (always so for a
        planner that streams its answer, and for one that streams nothing), else the streamed
        text, a new paragraph and ``message`` (a failure or cancel after part of the answer was
        streamed): what the client saw is never taken back.
        """
        written = self.written
        return message if message.startswith(written) else written + PARAGRAPH + message

    async def conclude(self, message: str) -> None:
        """Send what the client has not seen of the record's ``message``, before the record.

        A message that no longer begins with the streamed text (the record budget cut an
        answer too large to store) gets nothing more: the record says what was cut.
        """
        written = self.written
        if message.startswith(written):
            await self.delta(message[len(written):])
        if self._timer is not None and not self._timer.done():
            await self._timer  # the last frame keeps the interval too
        async with self._lock:
            await self._flush_locked()
