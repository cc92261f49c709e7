"""Feeds: every change of a client's record and every progress event, fanned out to its listeners.

Records come from ONE watch of the responses bucket per api process (an ordered consumer
delivering new changes only), dispatched by key to the clientIds someone here listens to.
Not a watch per clientId: the server caps consumers per stream (1,000 by default on
nats-server 2.11+), so a consumer per open socket would cap every api replica together at a
thousand followed conversations. The ordered consumer resumes from the last sequence it saw
after missed heartbeats, so a broker restart loses no change.

Progress events (status, output, answer deltas) come from a core-NATS subscription to the
client's event subject, one per clientId with listeners in this process (the server routes
them by interest, so a replica receives only the events of the clients it serves), dropped
with the last listener. They are not persisted: a listener gets those published after it
started, never earlier ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import msgspec
import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE

from athenic.shared import names
from athenic.shared.broker import Broker
from athenic.shared.logging import get_logger
from athenic.shared.messages import ResponseRecord, progress_event_decoder, response_record_decoder

log = get_logger(__name__)

# Updates a listener may have waiting before it counts as too slow and is dropped (it
# reconnects with its last revision and loses no record).
LISTENER_CAPACITY: Final = 256
RECORD_SUBJECT_PREFIX: Final = names.kv_subject(names.RESPONSES_BUCKET, "")
RECORDS_HEARTBEAT_SECONDS: Final = 1.0


@dataclass(frozen=True, slots=True)
class RecordChanged:
    record: ResponseRecord | None  # None: the record was deleted or expired
    revision: int


@dataclass(frozen=True, slots=True)
class Progress:
    type: str  # status | stdout | stderr | delta
    payload: bytes  # the ProgressEvent JSON as the orchestrator published it


class Lagging:
    """Put in place of everything a listener missed when its queue overflowed."""


class Restarting:
    """The process is shutting down: the listener should end so its client reconnects elsewhere."""


LAGGING: Final = Lagging()
RESTARTING: Final = Restarting()
Update = RecordChanged | Progress | Lagging | Restarting


class Listener:
    def __init__(self, capacity: int = LISTENER_CAPACITY) -> None:
        self.queue: asyncio.Queue[Update] = asyncio.Queue(capacity)

    def offer(self, update: Update) -> None:
        try:
            self.queue.put_nowait(update)
        except asyncio.QueueFull:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(LAGGING)


class Feed:
    """The listeners of one clientId in this process and its event subscription."""

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.listeners: set[Listener] = set()
        self.started: asyncio.Task[None] | None = None
        self._events: Subscription | None = None

    async def start(self, broker: Broker) -> None:
        self._events = await broker.nc.subscribe(names.event_subject(self.client_id), cb=self._on_event)

    def fan_out(self, update: Update) -> None:
        for listener in list(self.listeners):
            listener.offer(update)

    async def _on_event(self, msg: Msg) -> None:
        try:
            event = progress_event_decoder.decode(msg.data)
        except msgspec.DecodeError:
            log.warning("undecodable progress event dropped", client_id=self.client_id)
            return
        self.fan_out(Progress(event.type, msg.data))

    async def stop(self) -> None:
        with contextlib.suppress(nats.errors.Error, OSError):
            if self._events is not None:
                await self._events.unsubscribe()


class Feeds:
    """The feeds of this process, started on the first listener and stopped after the last."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._feeds: dict[str, Feed] = {}
        self._records: asyncio.Task[Subscription] | None = None
        self.ending = False

    def __len__(self) -> int:
        return len(self._feeds)

    @asynccontextmanager
    async def listen(self, client_id: str) -> AsyncIterator[Listener]:
        """Updates of ``client_id`` from now on; read the current state only after entering."""
        if self.ending:
            raise RuntimeError("the api is shutting down")
        await self._watch_records()
        feed = self._feeds.get(client_id)
        if feed is None:
            feed = self._feeds[client_id] = Feed(client_id)
            feed.started = asyncio.create_task(feed.start(self.broker))
        assert feed.started is not None
        listener = Listener()
        feed.listeners.add(listener)
        try:
            # shielded: one listener giving up must not cancel the start the others wait for
            await asyncio.shield(feed.started)
            yield listener
        finally:
            feed.listeners.discard(listener)
            if not feed.listeners and self._feeds.get(client_id) is feed:
                del self._feeds[client_id]
                await feed.stop()

    async def _watch_records(self) -> None:
        if self._records is None or (self._records.done() and self._records.exception() is not None):
            self._records = asyncio.create_task(self._subscribe_records())
        await asyncio.shield(self._records)

    async def _subscribe_records(self) -> Subscription:
        return await self.broker.js.subscribe(
            RECORD_SUBJECT_PREFIX + ">", stream=names.kv_stream(names.RESPONSES_BUCKET), cb=self._on_record,
            ordered_consumer=True, deliver_policy=api.DeliverPolicy.NEW,
            # two missed heartbeats and the consumer is recreated after the last change seen:
            # pushes resume within seconds of a broker restart (one heartbeat a second per process)
            idle_heartbeat=RECORDS_HEARTBEAT_SECONDS,
        )

    async def _on_record(self, msg: Msg) -> None:
        feed = self._feeds.get(msg.subject[len(RECORD_SUBJECT_PREFIX):])
        if feed is None:  # nobody here follows this conversation
            return
        revision = msg.metadata.sequence.stream
        operation = msg.headers.get(KV_OP) if msg.headers else None
        record: ResponseRecord | None = None
        if msg.data and operation not in (KV_DEL, KV_PURGE):
            try:
                record = response_record_decoder.decode(msg.data)
            except msgspec.DecodeError:
                log.error("undecodable response record", client_id=feed.client_id, revision=revision)
                return
        feed.fan_out(RecordChanged(record, revision))

    def end_all(self) -> None:
        """Shutdown begins: end every stream now, not when the server's grace period runs out.

        uvicorn closes WebSockets itself (1012) but waits for streaming responses (SSE) until
        its graceful timeout; ended now, their clients reconnect to another replica at once.
        """
        self.ending = True
        for feed in self._feeds.values():
            feed.fan_out(RESTARTING)

    async def close(self) -> None:
        feeds, self._feeds = list(self._feeds.values()), {}
        for feed in feeds:
            await feed.stop()
        if self._records is not None and self._records.done() and self._records.exception() is None:
            with contextlib.suppress(nats.errors.Error, OSError):
                await self._records.result().unsubscribe()
