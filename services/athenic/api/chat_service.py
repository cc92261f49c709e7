"""Accepting chat messages and reading their state: the api's only broker traffic.

Accepting makes one broker round trip (a JetStream publish and its ack), retried with the
same ``Nats-Msg-Id`` inside the deadline so a leader election or a lost ack never stores a
message twice. ``x-on-busy: reject`` rides on the same publish (stored only if no message of
the conversation is in the stream); ``interrupt`` adds a fire-and-forget broadcast. Only
auth (a conversation's first message claims it, ``ownership.py``) and an ``Idempotency-Key``
(``idempotency.py``) add round trips. Reading combines the response record (KV) with the
newest request still waiting in the stream, so an accepted message is never answered 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import msgspec
import nats.errors
import nats.js.errors
from nats.js.api import PubAck

from athenic.api.audit import AUDIT
from athenic.api.errors import BrokerUnavailable, Conflict, InvalidRequest, NotFound, PayloadTooLarge
from athenic.api.history import MAX_WAITING_SHOWN, HistoryPage, history_page
from athenic.api.idempotency import FirstRequest, Idempotency, check_key
from athenic.api.identity import Identity
from athenic.api.ids import new_client_id
from athenic.api.ownership import Ownership
from athenic.api.ratelimit import RateLimiter
from athenic.api.replies import Replies
from athenic.api.settings import ApiSettings
from athenic.shared import names
from athenic.shared.broker import Broker
from athenic.shared.broker import BrokerUnavailable as NotConnected
from athenic.shared.conversations import ConversationLog
from athenic.shared.logging import get_logger
from athenic.shared.messages import (
    ON_BUSY_VALUES,
    ChatRequest,
    ChatState,
    OnBusy,
    ResponseRecord,
    chat_request_decoder,
    encode,
    iso_timestamp,
    response_record_decoder,
)

log = get_logger(__name__)

BROKER_FAULTS = (nats.errors.Error, asyncio.TimeoutError, NotConnected, OSError)
WRONG_LAST_SEQUENCE = 10071  # JetStream: a message of the subject is in the stream (x-on-busy: reject)
PUBLISH_ATTEMPT_SECONDS = 1.0
READ_TIMEOUT_SECONDS = 5.0  # as the JetStream context's (broker.py)
RESPONSES_STREAM = names.kv_stream(names.RESPONSES_BUCKET)
UNAVAILABLE = "the message broker is unavailable; the message was not accepted, retry later"


def check_on_busy(value: str | None) -> OnBusy:
    if value is None or value == "enqueue":
        return "enqueue"
    if value == "interrupt":
        return "interrupt"
    if value == "reject":
        return "reject"
    raise InvalidRequest(f"x-on-busy must be one of {', '.join(ON_BUSY_VALUES)}")


@dataclass(frozen=True, slots=True)
class Accepted:
    client_id: str
    request_id: str


def check_client_id(client_id: str, what: str = "x-client-id") -> str:
    if not names.valid_client_id(client_id):
        raise InvalidRequest(f"{what} must be 1-128 characters of A-Z a-z 0-9 _ - (a UUID passes)")
    return client_id


def check_message(message: str, limit: int) -> str:
    if not message.strip():
        raise InvalidRequest("message must not be empty")
    size = len(message.encode())
    if size > limit:
        raise PayloadTooLarge(f"message is {size} bytes; the limit is {limit} bytes", limit=limit)
    return message


@dataclass(frozen=True, slots=True)
class UserChat:
    """The chat routes' one dependency: the service and who calls it.

    One dependency rather than two: Litestar resolves sibling dependencies in a task group
    per request, which cost a fifth of the api's time per accepted message.
    """

    service: ChatService
    identity: Identity


class ChatService:
    def __init__(self, broker: Broker, settings: ApiSettings, limiter: RateLimiter | None = None) -> None:
        self.broker = broker
        self.settings = settings
        self.limiter = limiter or RateLimiter(settings.athenic_rate_limit_per_minute,
                                              settings.athenic_rate_limit_burst)
        self._ownership: Ownership | None = None
        self.replies = Replies(broker)

    @property
    def log(self) -> ConversationLog:
        return self.ownership.log

    @property
    def ownership(self) -> Ownership:
        # made on first use: the buckets exist once the broker has connected
        if self._ownership is None:
            self._ownership = Ownership(ConversationLog(
                self.broker.bucket(names.CONVERSATIONS_BUCKET), self.broker.bucket(names.TURNS_BUCKET),
                self.broker.js, keep=self.broker.settings.athenic_turns_per_conversation))
        return self._ownership

    async def accept(self, message: str, client_id: str | None, who: Identity, request_id: str,
                     on_busy: str | None = None, idempotency_key: str | None = None) -> Accepted:
        check_message(message, self.settings.athenic_max_message_bytes)
        if client_id is not None:
            check_client_id(client_id)
        policy = check_on_busy(on_busy)
        if idempotency_key is not None:
            check_key(idempotency_key)
        self.limiter.admit(who.rate_key)
        try:
            if idempotency_key is not None:
                first = await Idempotency(self.broker.bucket(names.IDEMPOTENCY_BUCKET)).first(
                    idempotency_key, who, client_id, message,
                    FirstRequest(request_id=request_id, client_id=client_id or new_client_id(), message_sha256=""))
                request_id, client_id = first.request_id, first.client_id
            elif client_id is None:
                client_id = new_client_id()
            await self.ownership.claim(client_id, who)
        except BROKER_FAULTS as exc:
            raise BrokerUnavailable(UNAVAILABLE, headers={"Retry-After": "1"}) from exc
        request = ChatRequest(
            request_id=request_id, client_id=client_id, message=message,
            submitted_at=iso_timestamp(), tenant=who.tenant, owner=who.user, on_busy=policy,
        )
        headers = {names.HDR_MSG_ID: request_id, names.HDR_REQUEST_ID: request_id,
                   names.HDR_TENANT: who.tenant}
        if who.user is not None:
            headers[names.HDR_OWNER] = who.user
        if policy == "reject":
            headers[names.HDR_EXPECTED_LAST_SUBJECT_SEQ] = "0"
        ack = await self._publish(names.request_subject(client_id), encode(request), headers)
        if policy == "interrupt" and not ack.duplicate:
            # stops the running turn at once, even while every orchestrator slot is busy; the
            # orchestrator marks the conversation for the turns that have not started
            with contextlib.suppress(*BROKER_FAULTS):
                await self.broker.nc.publish(names.cancel_subject(client_id), encode({"before": ack.seq}))
        # the audit line, rendered cheaply and written at the end of the loop's iteration (audit.py)
        AUDIT.accepted(request_id, client_id, who.tenant, len(message), policy, bool(ack.duplicate))
        return Accepted(client_id, request_id)

    async def _publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> PubAck:
        deadline = time.monotonic() + self.settings.athenic_publish_deadline_seconds
        disconnected_since: float | None = None
        delay = 0.05
        while True:
            # Connected to no server at all, a POST waits only for a reconnect, not the whole deadline.
            now = time.monotonic()
            disconnected_since = (disconnected_since or now) if not self.broker.ready else None
            limit = deadline if disconnected_since is None else min(
                deadline, disconnected_since + self.settings.athenic_publish_disconnected_seconds)
            try:
                # Never hand a message to a disconnected client: nats-py would buffer it and
                # send it after we answered 503.
                if disconnected_since is not None:
                    raise NotConnected("not connected to NATS")
                # each attempt bounded: an ack lost with a server that died is retried (same
                # Nats-Msg-Id, so stored once) on the connection to another, not waited for
                return await self.replies.publish(subject, payload, headers,
                                               timeout=min(max(limit - now, 0.05), PUBLISH_ATTEMPT_SECONDS))
            except nats.js.errors.APIError as exc:
                if exc.err_code == WRONG_LAST_SEQUENCE:
                    raise Conflict("the conversation is still answering an earlier message (x-on-busy: reject); "
                                   "nothing was stored: send it again once the answer is in") from None
                fault: Exception = exc
            except BROKER_FAULTS as exc:
                fault = exc
            if limit - time.monotonic() <= delay:
                log.warning("publish failed; answering 503", request_id=headers[names.HDR_REQUEST_ID],
                            error=str(fault) or type(fault).__name__)
                raise BrokerUnavailable(UNAVAILABLE, headers={"Retry-After": "1"}) from fault
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def cancel(self, client_id: str, who: Identity) -> int:
        """Stop what runs for this client now; the record then says ``cancelled``."""
        await self.state(client_id, who)  # 404 for an unknown clientId or another user's
        # Only the replica running this client's work answers; silence means nothing runs.
        try:
            reply = await self.broker.nc.request(names.cancel_subject(client_id), b"", timeout=0.5)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            if self.broker.ready:
                raise Conflict(f"nothing is running for {client_id}") from None
            raise BrokerUnavailable("the message broker is unavailable; retry later",
                                    headers={"Retry-After": "1"}) from None
        except BROKER_FAULTS as exc:
            raise BrokerUnavailable("the message broker is unavailable; retry later",
                                    headers={"Retry-After": "1"}) from exc
        cancelled = int(msgspec.json.decode(reply.data).get("cancelled", 0))
        log.info("run cancelled", client_id=client_id, jobs=cancelled)
        return cancelled

    def check_connected(self) -> None:
        """Reads fail at once while the broker is away (a request would wait out its timeout)."""
        if not self.broker.ready:
            raise BrokerUnavailable("the message broker is unavailable; retry later", headers={"Retry-After": "1"})

    async def state(self, client_id: str, who: Identity) -> ChatState:
        check_client_id(client_id, "clientId")
        self.check_connected()
        try:
            # The stream first, then the record: the orchestrator writes the record before it
            # acks (which removes the message from the stream), so read in this order an
            # accepted message is always in one or the other. The other order has a window in
            # which a quickly answered message is in neither, and GET would say 404.
            pending = await self._pending(client_id)
            record, revision = await self._record(self.replies, client_id)
        except BROKER_FAULTS as exc:
            raise BrokerUnavailable("the message broker is unavailable; retry later",
                                    headers={"Retry-After": "1"}) from exc
        if pending is not None and (record is None or pending[1] > record.seq):
            request, _seq = pending
            if not who.may_access(request.owner) or (record is not None and not who.may_access(record.owner)):
                raise NotFound(f"no conversation {client_id}")
            previous = record.last_response if record is not None else None
            return ChatState(
                last_message=request.message,
                last_response=previous,
                requires_e2b=previous.requires_e2b if previous is not None else False,
                timestamp=iso_timestamp(),
                status="pending",
                request_id=request.request_id,
                client_id=client_id,
                revision=revision,
            )
        if record is None or not who.may_access(record.owner):
            raise NotFound(f"no conversation {client_id}")
        return ChatState.of_record(record, client_id, revision)

    async def history(self, client_id: str, who: Identity, limit: int, before: int | None) -> HistoryPage:
        """A page of the conversation's turns, newest first; 404 for an unknown or another user's."""
        check_client_id(client_id, "clientId")
        self.check_connected()
        try:
            # the stream before the conversation key, as in ``state``: a turn finishing in
            # between is seen twice (and shown once), never missed
            waiting = await self.log.waiting(client_id, MAX_WAITING_SHOWN)
            (conversation, _), (record, _) = await asyncio.gather(
                self.log.conversation(client_id), self._record(self.replies, client_id))
            owners = {conversation.owner if conversation else None, record.owner if record else None,
                      *(w.request.owner for w in waiting[:1])}
            if (conversation is None and record is None and not waiting) or not all(map(who.may_access, owners)):
                raise NotFound(f"no conversation {client_id}")
            return await history_page(self.log, client_id, record, waiting, limit, before)
        except BROKER_FAULTS as exc:
            raise BrokerUnavailable("the message broker is unavailable; retry later",
                                    headers={"Retry-After": "1"}) from exc

    @staticmethod
    async def _record(replies: Replies, client_id: str) -> tuple[ResponseRecord | None, int | None]:
        found = await replies.last_stored(RESPONSES_STREAM, names.kv_subject(names.RESPONSES_BUCKET, client_id),
                                               READ_TIMEOUT_SECONDS)
        if found is None or found[2]:  # none, or deleted
            return None, None
        value, revision, _ = found
        if not value:
            return None, revision
        return response_record_decoder.decode(value), revision

    async def _pending(self, client_id: str) -> tuple[ChatRequest, int] | None:
        """The newest accepted message of this client that no orchestrator has finished."""
        found = await self.replies.last_direct(names.REQUEST_STREAM, names.request_subject(client_id),
                                               READ_TIMEOUT_SECONDS)
        if found is None or not found[1]:
            return None
        data, seq = found
        try:
            return chat_request_decoder.decode(data), seq
        except msgspec.DecodeError:
            log.error("undecodable request in the stream", client_id=client_id, seq=seq)
            return None
