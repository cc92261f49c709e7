"""Writing what a turn leaves behind: the response record and the conversation log.

The response record (``RESPONSES_BUCKET``, one per clientId) is about one message (its
request-stream ``seq``); it is written by compare-and-set on the KV revision, and a writer
never replaces a record about a newer message nor the first final answer to this one, so a
redelivered message or a delivery that ran twice never answers twice.

The log (see ``shared/conversations.py``) gets the finished turn under the next turn number,
then the conversation key moves on by compare-and-set, remembering the turn's request so a
redelivery after a crash between the two writes never counts the turn twice. Turns older
than the count retention are purged; the age retention is the buckets' TTL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from athenic.orchestrator.record_budget import fit_response
from athenic.shared import kv, names
from athenic.shared.conversations import ConversationLog
from athenic.shared.messages import (
    FINAL_STATUSES,
    ChatRequest,
    ChatResponse,
    Conversation,
    Execution,
    ResponseRecord,
    Turn,
    encode,
    iso_timestamp,
    response_record_decoder,
)

_Build = Callable[[ResponseRecord | None], ResponseRecord]
Known = tuple[ResponseRecord | None, int]
Stored = tuple[ResponseRecord, int]
MAX_CAS_ATTEMPTS = 50
FinalStatus = Literal["completed", "failed", "cancelled"]
OnFinal = Callable[[ChatRequest, ChatResponse], Awaitable[None]]


@dataclass(frozen=True)
class Outcome:
    """How a turn ended: the answer's text (or why there is none) and what ran for it."""

    status: FinalStatus
    message: str | None = None
    requires_e2b: bool = False
    error: str | None = None


def final_response(request: ChatRequest, outcome: Outcome, executions: list[Execution]) -> ChatResponse:
    text = outcome.message
    if text is None:
        text = ("Your run was cancelled." if outcome.status == "cancelled"
                else f"Sorry, I could not answer this message: {outcome.error}")
    return ChatResponse(
        message=text,
        requires_e2b=outcome.requires_e2b or bool(executions),
        client_id=request.client_id,
        timestamp=iso_timestamp(),
        request_id=request.request_id,
        status=outcome.status,
        executions=executions,
        error=outcome.error,
    )


def stored_size(request: ChatRequest, seq: int, response: ChatResponse) -> int:
    """Bytes of the larger of the two values an answer is stored in: the record and the turn."""
    record = ResponseRecord(last_message=request.message, last_response=response,
                            requires_e2b=response.requires_e2b, status=response.status,
                            request_id=request.request_id, seq=seq, updated_at=response.timestamp,
                            owner=request.owner, tenant=request.tenant)
    turn = Turn(request_id=request.request_id, message=request.message, submitted_at=request.submitted_at,
                status=response.status, response=response)
    return max(len(encode(record)), len(encode(turn)))


def refused_response(response: ChatResponse, size: int, budget: int) -> ChatResponse:
    """What stands in for an answer NATS would not store: a terminal failure saying why."""
    error = (f"the answer was too large to store ({size} bytes; a stored answer may take {budget}) "
             "and NATS refused it")
    return msgspec.structs.replace(response, message=f"Sorry, I could not answer this message: {error}",
                                   status="failed", executions=[], error=error, truncated=True,
                                   dropped="the whole answer: too large to store")


class RecordStore:
    def __init__(self, responses: KeyValue, log: ConversationLog, max_bytes: int = 256 * 1024,
                 on_final: OnFinal | None = None) -> None:
        self.kv = responses
        self.log = log
        self.max_bytes = max_bytes
        self.on_final = on_final  # told once the final record of a turn is written (notifications)

    def fit(self, request: ChatRequest, seq: int, response: ChatResponse) -> ChatResponse:
        """The answer cut to the record budget (see record_budget.py)."""
        return fit_response(response, lambda candidate: stored_size(request, seq, candidate), self.max_bytes)

    async def current(self, client_id: str) -> Known:
        value, revision = await kv.read(self.kv, client_id)
        return (response_record_decoder.decode(value) if value else None), revision

    async def start(self, request: ChatRequest, seq: int, known: Known) -> Stored | None:
        """The ``processing`` record; ``None`` when this message was already answered."""

        def processing(current: ResponseRecord | None) -> ResponseRecord:
            return ResponseRecord(
                last_message=request.message,
                last_response=current.last_response if current else None,
                requires_e2b=current.requires_e2b if current else False,
                status="processing",
                request_id=request.request_id,
                seq=seq,
                updated_at=iso_timestamp(),
                owner=(current.owner if current and current.owner else request.owner),
                tenant=request.tenant,
            )

        return await self._write(request, seq, processing, known)

    async def finish(self, request: ChatRequest, seq: int, response: ChatResponse, known: Known | None) -> bool:
        """The final record; False when another delivery's final answer already stands."""

        def final(current: ResponseRecord | None) -> ResponseRecord:
            return ResponseRecord(
                last_message=request.message,
                last_response=response,
                requires_e2b=response.requires_e2b,
                status=response.status,
                request_id=request.request_id,
                seq=seq,
                updated_at=response.timestamp,
                owner=(current.owner if current and current.owner else request.owner),
                tenant=request.tenant,
            )

        written = await self._write(request, seq, final, known) is not None
        if written and self.on_final is not None:
            await self.on_final(request, response)
        return written

    async def _write(self, request: ChatRequest, seq: int, build: _Build, known: Known | None) -> Stored | None:
        """Store ``build(current)`` unless a record about a newer message, or a final one about
        this message, exists.

        ``known`` is a (record, revision) the caller already read or wrote: the first attempt
        trusts it instead of reading again; if the key moved on since, the compare-and-set
        fails and the record is read afresh.
        """
        client_id = request.client_id
        for _ in range(MAX_CAS_ATTEMPTS):
            current, revision = known if known is not None else await self.current(client_id)
            known = None
            # A newer message's record stands; so does the first final answer to this one: a
            # delivery that ran twice, or a request stored twice (a publish retried across a
            # leader election that the dedupe window missed), never answers twice.
            if current is not None and (
                current.seq > seq
                or (current.status in FINAL_STATUSES
                    and (current.seq == seq or current.request_id == request.request_id))
            ):
                return None
            record = build(current)
            try:
                return record, await kv.write_after(self.kv, client_id, encode(record), revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # someone wrote in between: read again and decide again
        raise RuntimeError(f"could not store the record of {client_id}: too much contention")

    async def append_turn(self, request: ChatRequest, response: ChatResponse,
                          known: tuple[Conversation | None, int] | None = None) -> int:
        """Add the finished turn to the log (idempotent per request); its turn number.

        ``known``: the conversation key and its revision as read when the message started; the
        first attempt trusts it (a write since makes the compare-and-set fail, and it is read again).
        """
        client_id = request.client_id
        turn = encode(Turn(request_id=request.request_id, message=request.message,
                           submitted_at=request.submitted_at, status=response.status, response=response))
        for _ in range(MAX_CAS_ATTEMPTS):
            conversation, revision = known if known is not None else await self.log.conversation(client_id)
            known = None
            if conversation is not None and conversation.last_request_id == request.request_id:
                return conversation.turns  # logged by an earlier delivery that crashed before its ack
            current = conversation or Conversation(owner=request.owner, tenant=request.tenant,
                                                   created_at=request.submitted_at)
            number = current.turns + 1
            # Written before the count moves on: a reader never finds a counted turn missing.
            await self.log.turns.put(names.turn_key(client_id, number), turn)
            moved = msgspec.structs.replace(current, owner=current.owner or request.owner, turns=number,
                                            last_request_id=request.request_id)
            try:
                await kv.write_after(self.log.conversations, client_id, encode(moved), revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # an interrupt or an ownership claim wrote in between
            if number > self.log.keep:
                await self.log.turns.purge(names.turn_key(client_id, number - self.log.keep))
            return number
        raise RuntimeError(f"could not log the turn of {client_id}: too much contention")

    async def interrupt_before(self, client_id: str, seq: int, request: ChatRequest) -> None:
        """Mark every message of the conversation below ``seq`` as interrupted (answered ``cancelled``)."""
        for _ in range(MAX_CAS_ATTEMPTS):
            conversation, revision = await self.log.conversation(client_id)
            current = conversation or Conversation(owner=request.owner, tenant=request.tenant,
                                                   created_at=request.submitted_at)
            if current.cancel_before >= seq:
                return
            moved = msgspec.structs.replace(current, cancel_before=seq)
            try:
                await kv.write_after(self.log.conversations, client_id, encode(moved), revision)
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
        raise RuntimeError(f"could not interrupt {client_id}: too much contention")

