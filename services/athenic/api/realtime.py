"""Per-client feeds: every change of a client's record and every progress event, fanned out.

One feed per clientId per api process, shared by all of that client's open sockets and
streams: a KV watch of the client's key (the record, with its revision) and a core-NATS
subscription to its event subject. The feed stops when its last listener leaves, so an idle
process holds nothing per clientId nobody listens to, and a thousand sockets on one
conversation cost one watch.
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
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from athenic.shared import names
from athenic.shared.broker import Broker
from athenic.shared.logging import get_logger
from athenic.shared.messages import ResponseRecord, progress_event_decoder, response_record_decoder

log = get_logger(__name__)

# Updates a listener may have waiting before it counts as too slow and is dropped (it
# reconnects with its last revision and loses no record).
LISTENER_CAPACITY: Final = 256


@dataclass(frozen=True, slots=True)
class RecordChanged:
    record: ResponseRecord | None  # None: the record was deleted or expired
    revision: int


@dataclass(frozen=True, slots=True)
class Progress:
    type: str  # status | stdout | stderr
    payload: bytes  # the ProgressEvent JSON as the orchestrator published it


class Lagging:
    """Put in place of everything a listener missed when its queue overflowed."""


LAGGING: Final = Lagging()
Update = RecordChanged | Progress | Lagging


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
    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.listeners: set[Listener] = set()
        self.latest: RecordChanged | None = None
        self.started: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None
        self._watcher: KeyValue.KeyWatcher | None = None
        self._pump: asyncio.Task[None] | None = None

    async def start(self, broker: Broker) -> None:
        kv = broker.bucket(names.RESPONSES_BUCKET)
        self._sub = await broker.nc.subscribe(names.event_subject(self.client_id), cb=self._on_event)
        self._watcher = await kv.watch(self.client_id)
        self._pump = asyncio.create_task(self._pump_records(self._watcher), name=f"feed-{self.client_id}")

    def _fan_out(self, update: Update) -> None:
        for listener in list(self.listeners):
            listener.offer(update)

    async def _on_event(self, msg: Msg) -> None:
        try:
            event = progress_event_decoder.decode(msg.data)
        except msgspec.DecodeError:
            log.warning("undecodable progress event dropped", client_id=self.client_id)
            return
        self._fan_out(Progress(event.type, msg.data))

    async def _pump_records(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is None or entry.revision is None:  # None: the end of the initial values
                continue
            record: ResponseRecord | None = None
            if entry.value and entry.operation not in (KV_DEL, KV_PURGE):
                try:
                    record = response_record_decoder.decode(entry.value)
                except msgspec.DecodeError:
                    log.error("undecodable response record", client_id=self.client_id, revision=entry.revision)
                    continue
            self.latest = RecordChanged(record, entry.revision)
            self._fan_out(self.latest)

    async def stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        with contextlib.suppress(nats.errors.Error, OSError, AttributeError):
            if self._watcher is not None:
                await self._watcher.stop()  # type: ignore[no-untyped-call]
        with contextlib.suppress(nats.errors.Error, OSError):
            if self._sub is not None:
                await self._sub.unsubscribe()


class Feeds:
    """The feeds of this process, started on the first listener and stopped after the last."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._feeds: dict[str, Feed] = {}

    def __len__(self) -> int:
        return len(self._feeds)

    @asynccontextmanager
    async def listen(self, client_id: str) -> AsyncIterator[Listener]:
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
            if feed.latest is not None:  # a feed already running: catch up on its newest record
                listener.offer(feed.latest)
            yield listener
        finally:
            feed.listeners.discard(listener)
            if not feed.listeners and self._feeds.get(client_id) is feed:
                del self._feeds[client_id]
                await feed.stop()

    async def close(self) -> None:
        feeds, self._feeds = list(self._feeds.values()), {}
        for feed in feeds:
            await feed.stop()
