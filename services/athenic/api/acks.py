"""JetStream publishes awaited through one reply subscription, without a task or a JSON parse per ack.

What ``JetStreamContext.publish`` does (a request to the stream's subject, the ack or the
stream's error as the reply), at less cost per message: the reply waits on a future with a
timer (``asyncio.wait_for`` wraps each wait in more machinery), and the ack is decoded by
msgspec into a struct rather than by ``json`` into a dict and then a dataclass. Errors are
nats-py's own: ``APIError`` subclasses from the stream's error, ``NoStreamResponseError`` when
no stream takes the subject, ``nats.errors.TimeoutError`` when no ack comes in time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import Header, PubAck

from athenic.shared.broker import Broker

NO_RESPONDERS = "503"


class _Ack(msgspec.Struct, frozen=True):
    stream: str = ""
    seq: int = 0
    domain: str | None = None
    duplicate: bool | None = None
    error: dict[str, Any] | None = None


_decode_ack = msgspec.json.Decoder(_Ack).decode


def _expire(future: asyncio.Future[Msg]) -> None:
    if not future.done():
        future.set_exception(nats.errors.TimeoutError())


class Acks:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._nc: Client | None = None
        self._prefix = ""
        self._count = 0
        self._waiting: dict[str, asyncio.Future[Msg]] = {}

    async def _subscribe(self, nc: Client) -> None:
        prefix = nc.new_inbox() + "."
        await nc.subscribe(prefix + "*", cb=self._on_reply)
        self._nc, self._prefix = nc, prefix

    async def _on_reply(self, msg: Msg) -> None:
        future = self._waiting.get(msg.subject[len(self._prefix):])
        if future is not None and not future.done():
            future.set_result(msg)

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str], timeout: float) -> PubAck:
        nc = self.broker.nc
        if nc is not self._nc:
            await self._subscribe(nc)
        self._count += 1
        token = str(self._count)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        self._waiting[token] = future
        timer = loop.call_later(timeout, _expire, future)
        try:
            await nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
            msg = await future
        finally:
            timer.cancel()
            del self._waiting[token]
        if msg.headers and msg.headers.get(Header.STATUS) == NO_RESPONDERS:
            raise nats.js.errors.NoStreamResponseError
        ack = _decode_ack(msg.data)
        if ack.error is not None:
            raise nats.js.errors.APIError.from_error(ack.error)
        return PubAck(stream=ack.stream, seq=ack.seq, domain=ack.domain, duplicate=ack.duplicate)
