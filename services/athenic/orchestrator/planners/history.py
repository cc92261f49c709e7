"""A bounded conversation history per clientId, kept in a NATS KV bucket.

One key per clientId holds the last exchanges (the user's message, the answer, the code that
ran for it). Appends are compare-and-set on the key's revision, retried on a conflict, so two
replicas answering the same client at once both land; exchanges are kept in the order they
finished. An exchange carries its request id: a redelivered message replaces its own earlier
exchange instead of adding a second one, and never sees itself as history.
"""

from __future__ import annotations

import asyncio
import random

import msgspec
import nats.errors
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from openai.types.chat import ChatCompletionMessageParam

from athenic.orchestrator.errors import RetryableError, TerminalError
from athenic.orchestrator.planners.llm_tools import clip
from athenic.shared import names
from athenic.shared.logging import get_logger

log = get_logger(__name__)

CAS_ATTEMPTS = 10
# Well under NATS's default 1 MiB payload limit, whatever the per-message bounds add up to.
MAX_VALUE_BYTES = 256 * 1024


class RanCode(msgspec.Struct, frozen=True):
    language: str
    code: str


class Exchange(msgspec.Struct, frozen=True, kw_only=True):
    request_id: str
    user: str
    answer: str
    code: list[RanCode] = msgspec.field(default_factory=list)


class _Stored(msgspec.Struct):
    exchanges: list[Exchange]


_decode = msgspec.json.Decoder(_Stored).decode


def to_messages(exchanges: list[Exchange]) -> list[ChatCompletionMessageParam]:
    """The exchanges as chat messages: the code that ran is shown so a follow-up can reuse it."""
    messages: list[ChatCompletionMessageParam] = []
    for exchange in exchanges:
        answer = exchange.answer
        for ran in exchange.code:
            answer += f"\n\n[code run for this answer]\n```{ran.language}\n{ran.code}\n```"
        messages.append({"role": "user", "content": exchange.user})
        messages.append({"role": "assistant", "content": answer})
    return messages


class ConversationHistory:
    """Load and append exchanges; ``max_messages`` counts both sides (two per exchange)."""

    def __init__(self, kv: KeyValue, *, max_messages: int, max_chars: int) -> None:
        self._kv = kv
        self._max_exchanges = max_messages // 2
        self._max_chars = max_chars

    @property
    def enabled(self) -> bool:
        return self._max_exchanges > 0

    async def load(self, client_id: str, *, excluding_request: str) -> list[Exchange]:
        if not self.enabled:
            return []
        try:
            exchanges, _ = await self._read(_key(client_id))
        except (nats.errors.Error, TimeoutError) as exc:
            raise RetryableError(f"cannot read the conversation history: {exc!r}") from exc
        kept = [e for e in exchanges if e.request_id != excluding_request]
        return kept[-self._max_exchanges :]

    async def append(self, client_id: str, exchange: Exchange) -> bool:
        """Add one exchange (bounded); False when the broker refused every attempt."""
        if not self.enabled:
            return True
        key = _key(client_id)
        exchange = self._bounded(exchange)
        try:
            for attempt in range(CAS_ATTEMPTS):
                exchanges, revision = await self._read(key)
                kept = [e for e in exchanges if e.request_id != exchange.request_id]
                kept = [*kept, exchange][-self._max_exchanges :]
                value = msgspec.json.encode(_Stored(exchanges=kept))
                while len(value) > MAX_VALUE_BYTES and len(kept) > 1:
                    kept = kept[1:]
                    value = msgspec.json.encode(_Stored(exchanges=kept))
                try:
                    if revision:
                        await self._kv.update(key, value, last=revision)
                    else:
                        await self._kv.create(key, value)
                    return True
                except KeyWrongLastSequenceError:
                    # Another replica wrote in between: read again after a jittered pause so
                    # writers racing for one key do not collide round after round.
                    await asyncio.sleep(random.uniform(0, 0.01 * (attempt + 1)))  # noqa: S311
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("history not saved", client_id=client_id, error=repr(exc))
            return False
        log.warning("history not saved: the key kept changing", client_id=client_id)
        return False

    async def _read(self, key: str) -> tuple[list[Exchange], int]:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return [], 0
        if entry.value is None:  # removed by a TTL
            return [], entry.revision or 0
        try:
            return _decode(entry.value).exchanges, entry.revision or 0
        except msgspec.DecodeError:
            # A value we cannot read is replaced rather than blocking the conversation.
            log.warning("unreadable conversation history replaced", key=key)
            return [], entry.revision or 0

    def _bounded(self, exchange: Exchange) -> Exchange:
        limit = self._max_chars
        return Exchange(
            request_id=exchange.request_id,
            user=clip(exchange.user, limit),
            answer=clip(exchange.answer, limit),
            code=[RanCode(ran.language, clip(ran.code, limit)) for ran in exchange.code[-4:]],
        )


def _key(client_id: str) -> str:
    if not names.valid_client_id(client_id):
        raise TerminalError(f"invalid clientId {client_id!r}")
    return client_id
