"""One turn at a time per conversation, in submission order, across every replica.

The request stream keeps a conversation's messages in submission order until each is acked,
so the oldest of them is the one that may be answered. A message delivered while an older
one of its conversation is still there waits here, holding no worker slot (the slot goes
back to fetching other conversations' work) and kept alive with in-progress acks by the
worker, until it is the oldest. Whoever finishes a turn publishes on the conversation's
``advanced`` subject; waiters listen on it by interest (a core subscription per conversation
with waiters in this process) and also re-check on a timer, so a lost signal costs at most
one poll.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from athenic.shared import names
from athenic.shared.broker import Broker
from athenic.shared.conversations import ConversationLog, Waiting
from athenic.shared.logging import get_logger
from athenic.shared.timeouts import within

log = get_logger(__name__)

POLL_SECONDS = 1.0


@dataclass
class _Waiters:
    """The messages of one conversation waiting in this process, and what they share: the wake
    signal and one reading of the conversation's oldest message per wake (not one per waiter:
    a conversation with many messages queued would cost a read of each at every turn)."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    count: int = 0
    subscription: Subscription | None = None
    epoch: int = 0  # wakes so far
    reading: asyncio.Future[Waiting | None] | None = None
    read_epoch: int = -1
    read_at: float = 0.0

    def woken(self) -> None:
        self.epoch += 1
        self.wake.set()

    async def oldest(self, read: Callable[[], Awaitable[Waiting | None]]) -> Waiting | None:
        """The oldest message as read since the last wake (and within half a poll), read once for all."""
        now = asyncio.get_running_loop().time()
        stale = (self.reading is None or self.read_epoch != self.epoch or now - self.read_at >= POLL_SECONDS / 2
                 or (self.reading.done() and (self.reading.cancelled() or self.reading.exception() is not None)))
        if stale:
            self.read_epoch, self.read_at = self.epoch, now
            self.reading = asyncio.ensure_future(read())
        assert self.reading is not None
        return await asyncio.shield(self.reading)


class TurnOrder:
    def __init__(self, broker: Broker, log: ConversationLog) -> None:
        self.broker = broker
        self.log = log
        self._waiters: dict[str, _Waiters] = {}

    async def is_next(self, client_id: str, seq: int) -> bool | None:
        """True when ``seq`` is the conversation's oldest message; None when it is no longer in the
        stream (answered by another delivery); False while an older message comes first."""
        oldest = await self.log.oldest_waiting(client_id)
        if oldest is None or oldest.seq > seq:
            # The message was delivered to us, so it was stored: before it counts as answered (and
            # is acked unworked), ask the leader; a follower's direct get may not have it yet.
            oldest = await self.log.oldest_waiting(client_id, from_leader=True)
            if oldest is None or oldest.seq > seq:
                return None
        return oldest.seq == seq

    async def wait_turn(self, client_id: str, seq: int) -> bool:
        """Wait until ``seq`` is the oldest message of its conversation (True), or gone (False)."""
        waiters = await self._enter(client_id)
        try:
            while True:
                waiters.wake.clear()
                oldest = await waiters.oldest(lambda: self.log.oldest_waiting(client_id))
                if oldest is not None and oldest.seq == seq:
                    return True
                if oldest is None or oldest.seq > seq:  # gone, or a stale reading: ask as ``is_next`` does
                    turn = await self.is_next(client_id, seq)
                    if turn is None:
                        return False
                    if turn:
                        return True
                with contextlib.suppress(TimeoutError):
                    await within(waiters.wake.wait(), POLL_SECONDS)
        finally:
            await self._leave(client_id, waiters)

    async def advanced(self, client_id: str) -> None:
        """A turn of ``client_id`` is finished and acked: wake its next message, wherever it waits."""
        local = self._waiters.get(client_id)
        if local is not None:
            local.woken()
        with contextlib.suppress(nats.errors.Error, OSError):
            await self.broker.nc.publish(names.advanced_subject(client_id), b"")

    async def _enter(self, client_id: str) -> _Waiters:
        waiters = self._waiters.get(client_id)
        if waiters is None:
            waiters = self._waiters[client_id] = _Waiters()

            async def wake(_: Msg) -> None:
                waiters.woken()

            try:
                waiters.subscription = await self.broker.nc.subscribe(names.advanced_subject(client_id), cb=wake)
            except (nats.errors.Error, OSError) as exc:  # the timer still re-checks
                log.warning("cannot listen for turns; polling", client_id=client_id, error=str(exc))
        waiters.count += 1
        return waiters

    async def _leave(self, client_id: str, waiters: _Waiters) -> None:
        waiters.count -= 1
        if waiters.count == 0 and self._waiters.get(client_id) is waiters:
            del self._waiters[client_id]
            if waiters.subscription is not None:
                with contextlib.suppress(nats.errors.Error, OSError):
                    await waiters.subscription.unsubscribe()
