"""Accepting chat messages and reading their state: the api's only broker traffic.

Accepting makes exactly one broker round trip (a JetStream publish and its ack), retried
with the same ``Nats-Msg-Id`` inside the deadline so a leader election or a lost ack never
stores a message twice. With auth on, a message to an existing clientId first checks that the
caller owns it (a KV get and a look at the stream, in parallel): only then is there a second
round trip. Reading combines the response record (KV) with the newest request
still waiting in the stream, so an accepted message is never answered 404.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import msgspec
import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from athenic.api.errors import BrokerUnavailable, Conflict, InvalidRequest, NotFound, PayloadTooLarge
from athenic.api.identity import Identity
from athenic.api.ratelimit import RateLimiter
from athenic.api.settings import ApiSettings
from athenic.shared import names
from athenic.shared.broker import Broker
from athenic.shared.broker import BrokerUnavailable as NotConnected
from athenic.shared.logging import get_logger
from athenic.shared.messages import (
    ChatRequest,
    ChatState,
    ResponseRecord,
    chat_request_decoder,
    encode,
    iso_timestamp,
    response_record_decoder,
)

log = get_logger(__name__)

BROKER_FAULTS = (nats.errors.Error, asyncio.TimeoutError, NotConnected, OSError)


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

    async def accept(self, message: str, client_id: str | None, who: Identity, request_id: str) -> str:
        check_message(message, self.settings.athenic_max_message_bytes)
        if client_id is not None:
            check_client_id(client_id)
        self.limiter.admit(who.rate_key)
        if client_id is None:
            client_id = str(uuid.uuid4())
        elif who.user is not None:  # auth is on: only the owner may post to an existing clientId
            await self._check_owner(client_id, who, request_id)
        request = ChatRequest(
            request_id=request_id, client_id=client_id, message=message,
            submitted_at=iso_timestamp(), tenant=who.tenant, owner=who.user,
        )
        headers = {names.HDR_MSG_ID: request_id, names.HDR_REQUEST_ID: request_id,
                   names.HDR_TENANT: who.tenant}
        if who.user is not None:
            headers[names.HDR_OWNER] = who.user
        await self._publish(names.request_subject(client_id), encode(request), headers)
        # request_id passed explicitly, not bound in a context: this is the hottest path
        log.info("chat message accepted", request_id=request_id, client_id=client_id, tenant=who.tenant,
                 bytes=len(message))
        return client_id

    async def _check_owner(self, client_id: str, who: Identity, request_id: str) -> None:
        try:
            (record, _), pending = await asyncio.gather(
                self._record(self.broker.bucket(names.RESPONSES_BUCKET), client_id), self._pending(client_id))
        except BROKER_FAULTS as exc:
            raise BrokerUnavailable("the message broker is unavailable; the message was not accepted, retry later",
                                    headers={"Retry-After": "1"}) from exc
        owners = {record.owner if record else None, pending[0].owner if pending else None}
        if not all(who.may_access(owner) for owner in owners):
            log.warning("message to a clientId of another user refused", client_id=client_id, request_id=request_id)
            raise NotFound(f"no conversation {client_id}")

    async def _publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
        deadline = time.monotonic() + self.settings.athenic_publish_deadline_seconds
        delay = 0.05
        while True:
            remaining = deadline - time.monotonic()
            try:
                # Never hand a message to a disconnected client: nats-py would buffer it and
                # send it after we answered 503.
                if not self.broker.ready:
                    raise NotConnected("not connected to NATS")
                await self.broker.js.publish(subject, payload, timeout=max(remaining, 0.05), headers=headers)
                return
            except BROKER_FAULTS as exc:
                remaining = deadline - time.monotonic()
                if remaining <= delay:
                    log.warning("publish failed; answering 503", request_id=headers[names.HDR_REQUEST_ID],
                                error=str(exc) or type(exc).__name__)
                    raise BrokerUnavailable(
                        "the message broker is unavailable; the message was not accepted, retry later",
                        headers={"Retry-After": "1"},
                    ) from exc
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

    async def state(self, client_id: str, who: Identity) -> ChatState:
        check_client_id(client_id, "clientId")
        try:
            responses: KeyValue = self.broker.bucket(names.RESPONSES_BUCKET)
            # The stream first, then the record: the orchestrator writes the record before it
            # acks (which removes the message from the stream), so read in this order an
            # accepted message is always in one or the other. The other order has a window in
            # which a quickly answered message is in neither, and GET would say 404.
            pending = await self._pending(client_id)
            record, revision = await self._record(responses, client_id)
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

    @staticmethod
    async def _record(kv: KeyValue, client_id: str) -> tuple[ResponseRecord | None, int | None]:
        try:
            entry = await kv.get(client_id)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None, None
        if entry.value is None or not entry.value:
            return None, entry.revision
        return response_record_decoder.decode(entry.value), entry.revision

    async def _pending(self, client_id: str) -> tuple[ChatRequest, int] | None:
        """The newest accepted message of this client that no orchestrator has finished."""
        try:
            msg = await self.broker.js.get_last_msg(names.REQUEST_STREAM, names.request_subject(client_id),
                                                    direct=True)
        except nats.js.errors.NotFoundError:
            return None
        if msg.data is None or msg.seq is None:
            return None
        try:
            return chat_request_decoder.decode(msg.data), msg.seq
        except msgspec.DecodeError:
            log.error("undecodable request in the stream", client_id=client_id, seq=msg.seq)
            return None
