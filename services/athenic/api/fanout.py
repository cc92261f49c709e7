"""Feeds: every change of a client's record and every progress event, fanned out to its listeners.

By interest: for each clientId someone in this process listens to, two core-NATS
subscriptions, one to its record subject (the server republishes every stored change of the
responses bucket there, with its revision: ``names.record_subject``) and one to its event
subject; both dropped with the last listener. NATS delivers by subject, so a replica receives
the updates of the conversations its own sockets follow and of no other: another replica's
busy conversations cost it nothing. No JetStream consumer at all (the server caps consumers
per stream, 1,000 by default, which a consumer per socket or per conversation would hit).

A listener reads the current state after it is registered and the subscriptions are in place
(``listen``), so nothing written in between is missed; what the state already holds is dropped
by revision. Changes written while the broker connection is down are re-read on reconnect (the
record's latest revision, for every followed conversation). A feed's updates reach its listeners
in the order the server sent them, whichever of the two subscriptions each came by
(``Feed._in_order``). Progress events are not persisted:
a listener gets those published after it started, never earlier ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE
from prometheus_client import Counter, Gauge

from athenic.shared import names
from athenic.shared.broker import Broker
from athenic.shared.logging import get_logger
from athenic.shared.messages import ResponseRecord, progress_event_decoder, response_record_decoder

log = get_logger(__name__)

# Updates a listener may have waiting before it counts as too slow and is dropped (it
# reconnects with its last revision and loses no record).
LISTENER_CAPACITY: Final = 256
RESYNC_CONCURRENCY: Final = 64  # records re-read at once after a reconnect

# What this replica received from the broker for its listeners: a replica following none of the
# busy conversations receives none of their updates (tests/api/push/test_interest.py reads these).
UPDATES_RECEIVED: Final = Counter("athenic_api_push_updates_received", "Record changes and progress events "
                                  "received from the broker for this replica's push listeners", ["kind"])
RECORDS_RECEIVED: Final = UPDATES_RECEIVED.labels("record")
EVENTS_RECEIVED: Final = UPDATES_RECEIVED.labels("event")
FOLLOWED: Final = Gauge("athenic_api_push_conversations_followed",
                        "Conversations this replica's sockets and SSE streams follow (two subscriptions each)")


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


_arrivals = itertools.count()
_EVENTS, _RECORDS = 0, 1  # a feed's subscriptions, in the order ``Feed.start`` makes them


@dataclass
class NumberedMsg(Msg):
    """A message numbered in the order this process read it off the broker connection (nats-py
    builds every message it reads with ``Client.msg_class``, as it parses them)."""

    arrival: int = field(default_factory=lambda: next(_arrivals))


class Feed:
    """The listeners of one clientId in this process and its two subscriptions."""

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.listeners: set[Listener] = set()
        self.started: asyncio.Task[None] | None = None
        self._subscriptions: list[Subscription] = []
        self._handed = [-1, -1]  # per subscription, the number of the last message it handed over
        self._held: list[tuple[int, Update | None]] = []  # numbered updates waiting for earlier ones

    async def start(self, broker: Broker) -> None:
        nc = broker.nc
        nc.msg_class = NumberedMsg  # (every message numbered as it is read: ``_in_order``)
        self._subscriptions.append(await nc.subscribe(names.event_subject(self.client_id), cb=self._on_event))
        self._subscriptions.append(await nc.subscribe(names.record_subject(self.client_id), cb=self._on_record))
        await nc.flush()  # the server holds both interests before the listener reads the state

    def fan_out(self, update: Update) -> None:
        for listener in list(self.listeners):
            listener.offer(update)

    def _in_order(self, via: int, msg: Msg, update: Update | None) -> None:
        """Fan ``update`` out in the order the server sent the feed's messages.

        nats-py runs each subscription's callbacks in a task of its own: of messages read in one
        go, one subscription's are all handled before the other's (a delta would reach the
        client after the record it belongs in). Each message is numbered as it is read
        (``NumberedMsg``); one is held until the other subscription, if it still has messages
        queued, has handed over every message numbered lower (a queue is in order, so those
        queued come after the last it handed over). ``via``: the index of the subscription."""
        arrival = getattr(msg, "arrival", None)
        if arrival is None:  # (not numbered: in the order handled)
            if update is not None:
                self.fan_out(update)
            return
        self._handed[via] = arrival
        heapq.heappush(self._held, (arrival, update))
        while self._held:
            first = self._held[0][0]
            if any(subscription.pending_msgs and self._handed[index] < first
                   for index, subscription in enumerate(self._subscriptions)):
                return  # an earlier message is still queued: its handover releases this one
            held = heapq.heappop(self._held)[1]
            if held is not None:
                self.fan_out(held)

    async def _on_event(self, msg: Msg) -> None:
        EVENTS_RECEIVED.inc()
        try:
            event = progress_event_decoder.decode(msg.data)
        except msgspec.DecodeError:
            log.warning("undecodable progress event dropped", client_id=self.client_id)
            self._in_order(_EVENTS, msg, None)
            return
        self._in_order(_EVENTS, msg, Progress(event.type, msg.data))

    async def _on_record(self, msg: Msg) -> None:
        RECORDS_RECEIVED.inc()
        headers = msg.headers or {}
        sequence = headers.get(names.HDR_SEQUENCE, "")
        if not sequence.isdigit():
            log.error("record change without its revision", client_id=self.client_id)
            self._in_order(_RECORDS, msg, None)
            return
        self._in_order(_RECORDS, msg, self._record_update(int(sequence), msg.data, headers.get(KV_OP)))

    def record_changed(self, revision: int, data: bytes | None, operation: str | None = None) -> None:
        """A change read outside the subscriptions (a re-read after a reconnect)."""
        update = self._record_update(revision, data, operation)
        if update is not None:
            self.fan_out(update)

    def _record_update(self, revision: int, data: bytes | None, operation: str | None) -> RecordChanged | None:
        record: ResponseRecord | None = None
        if data and operation not in (KV_DEL, KV_PURGE):
            try:
                record = response_record_decoder.decode(data)
            except msgspec.DecodeError:
                log.error("undecodable response record", client_id=self.client_id, revision=revision)
                return None
        return RecordChanged(record, revision)

    async def stop(self) -> None:
        self._held.clear()
        subscriptions, self._subscriptions = self._subscriptions, []
        with contextlib.suppress(nats.errors.Error, OSError):
            for subscription in subscriptions:
                await subscription.unsubscribe()


class Feeds:
    """The feeds of this process, started on the first listener and stopped after the last."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._feeds: dict[str, Feed] = {}
        self._resyncing: asyncio.Task[None] | None = None
        self.ending = False
        broker.on_reconnect.append(self._reconnected)

    def __len__(self) -> int:
        return len(self._feeds)

    def followed(self) -> frozenset[str]:
        """The clientIds this replica's listeners follow."""
        return frozenset(self._feeds)

    @asynccontextmanager
    async def listen(self, client_id: str) -> AsyncIterator[Listener]:
        """Updates of ``client_id`` from now on; read the current state only after entering."""
        if self.ending:
            raise RuntimeError("the api is shutting down")
        feed = self._feeds.get(client_id)
        if feed is None:
            feed = self._feeds[client_id] = Feed(client_id)
            FOLLOWED.set(len(self._feeds))
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
                FOLLOWED.set(len(self._feeds))
                await feed.stop()

    async def _reconnected(self) -> None:
        # not awaited here: the reconnect callback must return before requests can be answered
        if self._resyncing is None or self._resyncing.done():
            self._resyncing = asyncio.create_task(self.resync())

    async def resync(self) -> None:
        """Re-read every followed record: changes written while the connection was down."""
        kv = self.broker.bucket(names.RESPONSES_BUCKET)
        gate = asyncio.Semaphore(RESYNC_CONCURRENCY)

        async def one(feed: Feed) -> None:
            async with gate:
                try:
                    entry = await kv.get(feed.client_id)
                except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):  # nothing to push
                    return
                except (nats.errors.Error, OSError, TimeoutError) as exc:
                    log.warning("record not re-read after a reconnect", client_id=feed.client_id,
                                error=str(exc) or type(exc).__name__)
                    return
            if entry.revision is not None:
                feed.record_changed(entry.revision, entry.value)  # listeners drop what they have

        await asyncio.gather(*(one(feed) for feed in list(self._feeds.values())))

    def end_all(self) -> None:
        """Shutdown begins: end every stream now, not when the server's grace period runs out.

        uvicorn closes WebSockets itself (1012) but waits for streaming responses (SSE) until
        its graceful timeout; ended now, their clients reconnect to another replica at once.
        """
        self.ending = True
        for feed in self._feeds.values():
            feed.fan_out(RESTARTING)

    async def close(self) -> None:
        if self._resyncing is not None:
            self._resyncing.cancel()
        feeds, self._feeds = list(self._feeds.values()), {}
        FOLLOWED.set(0)
        for feed in feeds:
            await feed.stop()
