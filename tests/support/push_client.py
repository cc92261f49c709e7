"""Real clients of the push routes (websockets, httpx SSE) and direct writes of response records."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import nats
import websockets
from nats.aio.client import Client
from nats.js.kv import KeyValue
from websockets.asyncio.client import ClientConnection

from athenic.shared import names
from athenic.shared.messages import ChatResponse, ResponseRecord, Status, encode, iso_timestamp


def ws_url(base: str, client_id: str, after: int | None = None) -> str:
    url = base.replace("http://", "ws://") + f"/api/chat/ws/{client_id}"
    return url if after is None else f"{url}?after={after}"


@asynccontextmanager
async def open_socket(base: str, client_id: str, after: int | None = None,
                      token: str | None = None) -> AsyncIterator[ClientConnection]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with websockets.connect(ws_url(base, client_id, after), additional_headers=headers,
                                  open_timeout=5) as socket:
        yield socket


async def recv(socket: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    frame = json.loads(await asyncio.wait_for(socket.recv(), timeout))
    assert isinstance(frame, dict) and "type" in frame, frame
    return frame


async def recv_type(socket: ClientConnection, kind: str, timeout: float = 5) -> dict[str, Any]:
    """The next frame of ``kind``, skipping others (e.g. progress events before a response)."""
    async with asyncio.timeout(timeout):
        while True:
            frame = await recv(socket, timeout)
            if frame["type"] == kind:
                return frame


async def nothing_within(socket: ClientConnection, seconds: float) -> None:
    try:
        frame = await asyncio.wait_for(socket.recv(), seconds)
    except TimeoutError:
        return
    raise AssertionError(f"expected no frame, got {frame!r}")


async def close_code(socket: ClientConnection, timeout: float = 5) -> tuple[int | None, str]:
    """Read until the server closes; the close code and reason it sent."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await socket.recv()
    except websockets.ConnectionClosed as closed:
        received = closed.rcvd
    if received is None:
        raise AssertionError("the connection dropped without a close frame")
    return received.code, received.reason


class SseEvent(dict[str, Any]):
    @property
    def data(self) -> dict[str, Any]:
        value = json.loads(self["data"])
        assert isinstance(value, dict)
        return value


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """Parse a text/event-stream body into events (comments come as ``{"comment": ...}``)."""
    event = SseEvent()
    async for line in response.aiter_lines():
        if line == "":
            if event:
                yield event
            event = SseEvent()
        elif line.startswith(":"):
            yield SseEvent(comment=line[1:].strip())
        else:
            key, _, value = line.partition(":")
            event[key] = value[1:] if value.startswith(" ") else value


async def next_sse(events: AsyncIterator[SseEvent], kind: str, timeout: float = 5) -> SseEvent:
    async with asyncio.timeout(timeout):
        async for event in events:
            if event.get("event") == kind:
                return event
    raise AssertionError(f"the stream ended before a {kind} event")


class Records:
    """Writes response records straight into the KV bucket, as the orchestrator would."""

    def __init__(self, nats_url: str) -> None:
        self.nats_url = nats_url
        self.nc: Client | None = None
        self.kv: KeyValue | None = None

    async def __aenter__(self) -> Records:
        self.nc = await nats.connect(self.nats_url)
        self.kv = await self.nc.jetstream().key_value(names.RESPONSES_BUCKET)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.nc is not None
        await self.nc.close()

    async def put(self, client_id: str, status: Status, *, seq: int = 1, owner: str | None = None,
                  message: str = "What is 2+2?", answer: str = "4") -> int:
        assert self.kv is not None
        final = status in ("completed", "failed", "cancelled")
        response = ChatResponse(message=answer, requires_e2b=False, client_id=client_id, timestamp=iso_timestamp(),
                                request_id=f"req-{seq}", status=status) if final else None
        record = ResponseRecord(last_message=message, last_response=response, requires_e2b=False, status=status,
                                request_id=f"req-{seq}", seq=seq, updated_at=iso_timestamp(), owner=owner)
        return int(await self.kv.put(client_id, encode(record)))

    async def revision(self, client_id: str) -> int:
        assert self.kv is not None
        entry = await self.kv.get(client_id)
        assert entry.revision is not None
        return int(entry.revision)

    async def progress(self, client_id: str, kind: str, *, phase: str | None = None, data: str | None = None) -> None:
        assert self.nc is not None
        event: dict[str, Any] = {"type": kind, "clientId": client_id, "requestId": "req-1",
                                 "timestamp": iso_timestamp()}
        if phase is not None:
            event["phase"] = phase
        if data is not None:
            event["data"] = data
        await self.nc.publish(names.event_subject(client_id), json.dumps(event).encode())
        await self.nc.flush()
