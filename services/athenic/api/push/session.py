"""The push session: one client's view of one conversation, whichever transport carries it."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from athenic.api.chat_service import ChatService, check_client_id
from athenic.api.errors import BrokerUnavailable, InvalidRequest, NotFound
from athenic.api.fanout import Feeds, Lagging, Listener, Progress, RecordChanged, Restarting
from athenic.api.identity import Identity
from athenic.api.presence import Following, follow
from athenic.api.push.frames import CLOSE_NOT_FOUND, CLOSE_RESTARTING, CLOSE_TRY_AGAIN, Closed, Frame, response_frame
from athenic.shared.logging import get_logger
from athenic.shared.messages import ChatState

log = get_logger(__name__)


class PushSession:
    """One client's view of one conversation: the current state, then every update it may see."""

    def __init__(self, service: ChatService, feeds: Feeds, client_id: str, who: Identity,
                 after: int | None, may_start: bool = False) -> None:
        self.service = service
        # a socket may follow a conversation that has no message yet, and start it
        self.may_start = may_start
        # Progress events carry no owner: they are passed on only once this client is known to
        # own the conversation (its state was readable, its own message was accepted, or a record
        # of it arrived), so a socket waiting on an unused id never sees another user's output.
        self.verified = who.user is None
        self.feeds = feeds
        self.client_id = client_id
        self.who = who
        self.after = after
        self.sent_revision = 0
        self._listening: AbstractAsyncContextManager[Listener] | None = None
        self._listener: Listener | None = None
        self._presence: Following | None = None

    async def open(self) -> Frame | None:
        """Start listening, then check access (404/400/503 as ``ApiError``); the first frame if due.

        Listening starts before the state is read, so a change in between is not lost (the
        revision check drops what the state already holds).
        """
        check_client_id(self.client_id, "clientId")
        self.service.check_connected()  # not a subscription that waits for a broker that is away
        self._listening = self.feeds.listen(self.client_id)
        try:
            self._listener = await self._listening.__aenter__()
        except Exception as exc:
            self._listening = None
            log.warning("cannot follow the conversation", client_id=self.client_id,
                        error=str(exc) or type(exc).__name__)
            raise BrokerUnavailable("the message broker is unavailable; retry later",
                                    headers={"Retry-After": "1"}) from exc
        self._presence = await follow(self.service.broker, self.client_id, self.who.user)  # no push while open
        try:
            state = await self.service.state(self.client_id, self.who)
        except NotFound:
            if not self.may_start or not await self.service.ownership.may_follow(self.client_id, self.who):
                raise
            return None  # nothing yet: the first message's frames follow
        self.verified = True
        revision = state.revision or 0
        self.sent_revision = revision
        # A reconnecting client that already has this record (and no newer message waits) gets no repeat.
        if self.after is not None and state.status != "pending" and revision and revision <= self.after:
            return None
        return response_frame(state)

    async def next(self) -> Frame:
        assert self._listener is not None
        while True:
            update = await self._listener.queue.get()
            if isinstance(update, Progress):
                if not self.verified:
                    continue
                return Frame(update.type, update.payload)
            if isinstance(update, Lagging):
                raise Closed(CLOSE_TRY_AGAIN, "too slow to read updates; reconnect with ?after=<revision>")
            if isinstance(update, Restarting):
                raise Closed(CLOSE_RESTARTING, "the server is restarting; reconnect with ?after=<revision>")
            if isinstance(update, RecordChanged):
                if update.revision <= self.sent_revision or update.record is None:
                    continue
                if not self.who.may_access(update.record.owner):
                    raise Closed(CLOSE_NOT_FOUND, f"no conversation {self.client_id}")
                self.verified = True
                self.sent_revision = update.revision
                return response_frame(ChatState.of_record(update.record, self.client_id, update.revision))

    async def close(self) -> None:
        if self._presence is not None:
            await self._presence.stop()
        if self._listening is not None:
            listening, self._listening = self._listening, None
            await listening.__aexit__(None, None, None)


def parse_after(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise InvalidRequest("after must be a KV revision (a non-negative integer)")
    return int(value)
