"""Who owns a conversation: claimed atomically by its first message when auth is on.

The claim is a create of the conversation's key in ``CONVERSATIONS_BUCKET`` (NATS refuses a
second create), so of two users racing their first message to one fresh clientId exactly one
wins; the other is answered 404 before anything of theirs is stored. An owner never changes
while the conversation lives, so a claim seen is cached for a while: a user's later messages
cost no extra broker round trip.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import msgspec
import nats.js.errors

from athenic.api.errors import NotFound
from athenic.api.identity import Identity
from athenic.shared import kv
from athenic.shared.conversations import ConversationLog
from athenic.shared.logging import get_logger
from athenic.shared.messages import Conversation, encode, iso_timestamp

log = get_logger(__name__)

CACHED_CLAIMS = 100_000
# Shorter than any conversation lives: a conversation that expired may be claimed anew by someone else.
CLAIM_CACHE_SECONDS = 300.0
CLAIM_ATTEMPTS = 5


class Ownership:
    def __init__(self, log: ConversationLog) -> None:
        self.log = log
        self._claims: OrderedDict[str, tuple[str, float]] = OrderedDict()

    async def claim(self, client_id: str, who: Identity) -> None:
        """Make ``who`` the owner of an unused ``client_id``, or check they own it (404 if not)."""
        user = who.user
        if user is None:  # auth off: one anonymous user owns everything
            return
        cached = self._claims.get(client_id)
        if cached is not None and cached[0] == user and cached[1] > time.monotonic():
            return
        for _ in range(CLAIM_ATTEMPTS):
            conversation, revision = await self.log.conversation(client_id)
            if conversation is not None and conversation.owner is not None:
                if conversation.owner != user:
                    log.warning("message to a conversation of another user refused", client_id=client_id)
                    raise NotFound(f"no conversation {client_id}")
                break
            claimed = (msgspec.structs.replace(conversation, owner=user) if conversation is not None
                       else Conversation(owner=user, tenant=who.tenant, created_at=iso_timestamp()))
            try:
                await kv.write_after(self.log.conversations, client_id, encode(claimed), revision)
                break
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # someone wrote first: look again
        else:
            raise NotFound(f"no conversation {client_id}")
        self._remember(client_id, user)

    async def may_follow(self, client_id: str, who: Identity) -> bool:
        """Whether ``who`` may watch ``client_id`` before it has any message: unused, or theirs."""
        if who.user is None:
            return True
        conversation, _ = await self.log.conversation(client_id)
        return conversation is None or who.may_access(conversation.owner)

    def _remember(self, client_id: str, user: str) -> None:
        self._claims[client_id] = (user, time.monotonic() + CLAIM_CACHE_SECONDS)
        self._claims.move_to_end(client_id)
        while len(self._claims) > CACHED_CLAIMS:
            self._claims.popitem(last=False)
