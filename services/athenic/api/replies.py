"""The api's JetStream calls on its hot paths through one reply subscription: acked publishes, last messages.

What ``JetStreamContext.publish``, ``get_last_msg(direct=True)`` and ``KeyValue.get`` do, at
less cost per call: the reply waits on a future with a timer (``asyncio.wait_for`` wraps every
wait in more machinery) and JSON replies are decoded by msgspec into structs rather than by
``json`` into dicts and then dataclasses. The reads go where nats-py sends them: the request
stream's direct get (any replica may answer; the stream allows it), the responses bucket's
message get through the stream leader (a follower could answer with an older record). Errors
are nats-py's own: ``APIError`` subclasses from the server's error, ``NoStreamResponseError``
when no stream takes a published subject, ``nats.errors.TimeoutError`` when no reply comes in time.
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
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE

from athenic.shared.broker import Broker

NO_RESPONDERS = "503"
NOT_FOUND = "404"
API_PREFIX = "$JS.API"


class _Ack(msgspec.Struct, frozen=True):
    stream: str = ""
    seq: int = 0
    domain: str | None = None
    duplicate: bool | None = None
    error: dict[str, Any] | None = None


class _Stored(msgspec.Struct, frozen=True):
    subject: str
    seq: int
    data: bytes = b""  # base64 on the wire: msgspec decodes it
    hdrs: bytes = b""


class _MsgGet(msgspec.Struct, frozen=True):
    message: _Stored | None = None
    error: dict[str, Any] | None = None


_decode_ack = msgspec.json.Decoder(_Ack).decode
_decode_get = msgspec.json.Decoder(_MsgGet).decode
MESSAGE_NOT_FOUND = 10037  # JetStream: no message of that subject


def _expire(future: asyncio.Future[Msg]) -> None:
    if not future.done():
        future.set_exception(nats.errors.TimeoutError())


def _deleted(raw_headers: bytes) -> bool:
    """Whether stored headers (``NATS/1.0\\r\\nKV-Operation: DEL\\r\\n...``) mark a KV delete or purge."""
    for line in raw_headers.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().decode(errors="replace") == KV_OP:
            return value.strip().decode(errors="replace") in (KV_DEL, KV_PURGE)
    return False


class Replies:
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

    async def request(self, subject: str, payload: bytes, timeout: float,
                      headers: dict[str, str] | None = None) -> Msg:
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
            return await future
        finally:
            timer.cancel()
            del self._waiting[token]

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str], timeout: float) -> PubAck:
        """Store a message in its stream; the stream's ack."""
        msg = await self.request(subject, payload, timeout, headers)
        if msg.headers and msg.headers.get(Header.STATUS) == NO_RESPONDERS:
            raise nats.js.errors.NoStreamResponseError
        ack = _decode_ack(msg.data)
        if ack.error is not None:
            raise nats.js.errors.APIError.from_error(ack.error)
        return PubAck(stream=ack.stream, seq=ack.seq, domain=ack.domain, duplicate=ack.duplicate)

    async def last_direct(self, stream: str, subject: str, timeout: float) -> tuple[bytes, int] | None:
        """The newest message of ``subject`` (data, sequence) from any replica; None when there is none."""
        msg = await self.request(f"{API_PREFIX}.DIRECT.GET.{stream}.{subject}", b"", timeout)
        headers = msg.headers or {}
        if not msg.data:
            status = headers.get(Header.STATUS)
            if status == NOT_FOUND:
                return None
            if status:
                raise nats.js.errors.APIError.from_msg(msg)
        return msg.data, int(headers.get("Nats-Sequence") or 0)

    async def last_stored(self, stream: str, subject: str, timeout: float) -> tuple[bytes, int, bool] | None:
        """The newest message of ``subject`` through the stream leader: (data, sequence, deleted) or None."""
        reply = await self.request(f"{API_PREFIX}.STREAM.MSG.GET.{stream}",
                                   b'{"last_by_subj":"' + subject.encode() + b'"}', timeout)
        found = _decode_get(reply.data)
        if found.error is not None:
            if found.error.get("err_code") == MESSAGE_NOT_FOUND or found.error.get("code") == 404:
                return None
            raise nats.js.errors.APIError.from_error(found.error)
        if found.message is None:
            return None
        return found.message.data, found.message.seq, _deleted(found.message.hdrs)
