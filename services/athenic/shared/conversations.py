"""Reading the conversation log: the conversation's key, its finished turns, its waiting messages.

A conversation (a clientId) is a log of turns, each one accepted message and its answer,
numbered 1, 2, ... in submission order. Finished turns live in ``TURNS_BUCKET`` under
``<clientId>.<number>``; ``CONVERSATIONS_BUCKET`` holds the owner and how many turns were
finished. Messages not finished yet are still in the request stream (work-queue retention:
a message leaves it when the orchestrator acks it, after its turn is written), in submission
order, so the oldest of them is the one being answered. The orchestrator writes the log
(``orchestrator/records.py``); both services read it through this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import msgspec
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from athenic.shared import kv, names
from athenic.shared.logging import get_logger
from athenic.shared.messages import (
    ChatRequest,
    Conversation,
    Turn,
    chat_request_decoder,
    conversation_decoder,
    turn_decoder,
)

log = get_logger(__name__)


class Waiting(msgspec.Struct, frozen=True):
    """A message of the conversation still in the request stream, with its stream sequence."""

    request: ChatRequest
    seq: int


class ConversationLog:
    def __init__(self, conversations: KeyValue, turns: KeyValue, js: JetStreamContext, *, keep: int) -> None:
        self.conversations = conversations
        self.turns = turns
        self.js = js
        self.keep = keep  # turns kept per conversation (ATHENIC_TURNS_PER_CONVERSATION)

    async def conversation(self, client_id: str) -> tuple[Conversation | None, int]:
        """The conversation's key (``None`` for an unused clientId) and its revision (0 when absent)."""
        value, revision = await kv.read(self.conversations, client_id)
        if value is None:
            return None, revision
        return conversation_decoder.decode(value), revision

    def first_kept(self, conversation: Conversation) -> int:
        """The oldest turn number the count retention keeps."""
        return max(1, conversation.turns - self.keep + 1)

    async def finished(self, client_id: str, numbers: Iterable[int]) -> dict[int, Turn]:
        """The finished turns among ``numbers`` that are still kept (read in parallel)."""
        wanted = list(numbers)
        values = await asyncio.gather(*(kv.read(self.turns, names.turn_key(client_id, n)) for n in wanted))
        found: dict[int, Turn] = {}
        for number, (value, _) in zip(wanted, values, strict=True):
            if value is not None:
                found[number] = turn_decoder.decode(value)
        return found

    async def recent(self, client_id: str, conversation: Conversation | None, limit: int) -> list[Turn]:
        """The last ``limit`` finished turns, oldest first (what a planner sees as history)."""
        if conversation is None or limit <= 0:
            return []
        low = max(self.first_kept(conversation), conversation.turns - limit + 1)
        found = await self.finished(client_id, range(low, conversation.turns + 1))
        return [found[n] for n in sorted(found)]

    async def oldest_waiting(self, client_id: str, *, from_leader: bool = False) -> Waiting | None:
        """The conversation's oldest message still in the request stream: the one answered now.

        A direct get may be answered by a follower that has not applied the newest messages yet;
        ``from_leader`` asks the stream's leader, for a reading that must not be stale.
        """
        return await self._waiting_from(client_id, 1, direct=not from_leader)

    async def waiting(self, client_id: str, limit: int) -> list[Waiting]:
        """Up to ``limit`` messages of the conversation still in the request stream, oldest first."""
        found: list[Waiting] = []
        start = 1
        while len(found) < limit:
            item = await self._waiting_from(client_id, start)
            if item is None:
                break
            found.append(item)
            start = item.seq + 1
        return found

    async def _waiting_from(self, client_id: str, seq: int, direct: bool = True) -> Waiting | None:
        try:
            msg = await self.js.get_msg(names.REQUEST_STREAM, seq=seq, subject=names.request_subject(client_id),
                                        next=True, direct=direct)
        except nats.js.errors.NotFoundError:
            return None
        if msg.data is None or msg.seq is None:
            return None
        try:
            return Waiting(chat_request_decoder.decode(msg.data), msg.seq)
        except msgspec.DecodeError:
            log.error("undecodable request in the stream", client_id=client_id, seq=msg.seq)
            return None
