"""Streamed answers through the real services: model → orchestrator → NATS → api → WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from athenic.orchestrator.events import DELTA_INTERVAL_SECONDS
from tests.support.nats import NatsServer
from tests.support.openai_models import API_KEY
from tests.support.openai_standin import Reply, answer, serving_in_thread, tool_call
from tests.support.push_client import open_socket, recv, recv_type
from tests.support.services import Api, Orchestrator

pytestmark = pytest.mark.e2e

TINY_CHUNKS = [str(i % 10) for i in range(10_000)]
SLOW_WORDS = [f" word{i}" for i in range(300)]
FLAKY_CALLS: list[str] = []


def model(body: dict[str, Any]) -> Reply:
    """Answers by what the user asked: a tool round between two streamed parts, or a flood of chunks."""
    messages = body["messages"]
    asked = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    if "flood" in asked:
        return answer("".join(TINY_CHUNKS), chunks=TINY_CHUNKS)
    if "slowly" in asked:  # a minute of text unless cancelled
        return answer("".join(SLOW_WORDS), chunks=SLOW_WORDS, chunk_delay=0.2)
    if "flaky" in asked:
        FLAKY_CALLS.append(asked)
        if len(FLAKY_CALLS) == 1:  # the line drops after two pieces: no finish, no [DONE]
            return Reply(answer("Half an answer").body, chunks=["Half ", "an answer"], stop_after=3)
        return answer("The whole answer, on the second attempt.")
    if messages[-1]["role"] == "tool":
        printed = json.loads(messages[-1]["content"])["stdout"].strip()
        return answer(f"The product is {printed}.")
    return tool_call("python", "print(6 * 7)", text="Let me compute that.")


@pytest.fixture(scope="module")
def services(system_nats: NatsServer, module_tmp: Path) -> Iterator[Api]:
    api = Api(system_nats.url, module_tmp).start()
    try:
        with serving_in_thread(model) as llm:
            orchestrator = Orchestrator(system_nats.url, module_tmp, OPENAI_BASE_URL=llm.base_url,
                                        OPENAI_API_KEY=API_KEY, ATHENIC_LLM_MODEL="standin-model").start()
            try:
                yield api
            finally:
                orchestrator.kill()  # its graceful shutdown is tested elsewhere
    finally:
        api.terminate()


async def converse(ws: ClientConnection, message: str) -> tuple[str, list[dict[str, Any]]]:
    """Send a chat frame; its request id and every frame up to its final record (included)."""
    await ws.send(json.dumps({"type": "chat", "message": message}))
    request_id = (await recv_type(ws, "accepted"))["requestId"]
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(60):
        while True:
            frame = await recv(ws, timeout=60)
            frames.append(frame)
            if (frame["type"] == "response" and frame["requestId"] == request_id
                    and frame["status"] in ("completed", "failed", "cancelled")):
                return request_id, frames


def deltas_of(frames: list[dict[str, Any]], request_id: str) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] == "delta" and f["requestId"] == request_id]


def at(frame: dict[str, Any]) -> float:
    return datetime.fromisoformat(frame["timestamp"].replace("Z", "+00:00")).timestamp()


async def test_deltas_come_before_the_record_and_make_its_message(services: Api) -> None:
    client_id = f"stream-{uuid.uuid4().hex[:8]}"
    async with open_socket(services.url, client_id) as ws:
        request_id, frames = await converse(ws, "What is 6 times 7?")

    final = frames[-1]
    assert final["lastResponse"]["status"] == "completed", final
    message = final["lastResponse"]["message"]
    assert message == "Let me compute that.\n\nThe product is 42."
    deltas = deltas_of(frames, request_id)
    assert "".join(d["text"] for d in deltas) == message
    assert [d["index"] for d in deltas] == list(range(len(deltas)))
    assert {d["clientId"] for d in deltas} == {client_id}
    # the first part, then the run's status frames and output, then the second part
    running = next(i for i, f in enumerate(frames) if f.get("phase") == "running")
    planning = next(i for i, f in enumerate(frames) if i > running and f.get("phase") == "planning")
    assert "".join(f["text"] for f in frames[:running] if f["type"] == "delta") == "Let me compute that."
    between = [f["type"] for f in frames[running:planning]]
    assert "stdout" in between and "delta" not in between, between
    assert "".join(f["text"] for f in frames[planning:] if f["type"] == "delta") == "\n\nThe product is 42."

    # a client that connects now gets the record, and no replay of the stream
    async with open_socket(services.url, client_id) as again:
        first = await recv(again)
        assert first["type"] == "response" and first["lastResponse"]["message"] == message
        # no delta is replayed (the turn's last status frame, published just after the record,
        # may still reach a socket that connected in between)
        later = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                while True:
                    later.append(json.loads(await again.recv()))
        assert all(frame["type"] == "status" for frame in later), later


async def test_ten_thousand_tiny_chunks_arrive_in_few_frames_and_exactly(services: Api) -> None:
    client_id = f"flood-{uuid.uuid4().hex[:8]}"
    async with open_socket(services.url, client_id) as ws:
        request_id, frames = await converse(ws, "flood me")

    message = frames[-1]["lastResponse"]["message"]
    assert message == "".join(TINY_CHUNKS)
    deltas = deltas_of(frames, request_id)
    assert "".join(d["text"] for d in deltas) == message
    assert frames.index(deltas[-1]) < len(frames) - 1  # all before the record
    # coalesced: one frame per interval (stamped as published), far fewer than the chunks
    span = at(deltas[-1]) - at(deltas[0])
    assert len(deltas) <= 1 + span / (DELTA_INTERVAL_SECONDS - 0.005), (len(deltas), span)
    assert len(deltas) < 1000, len(deltas)


async def test_a_stream_broken_off_is_retried_and_its_deltas_start_again_at_index_0(services: Api) -> None:
    client_id = f"flaky-{uuid.uuid4().hex[:8]}"
    async with open_socket(services.url, client_id) as ws:
        request_id, frames = await converse(ws, "flaky line")

    message = frames[-1]["lastResponse"]["message"]
    assert message == "The whole answer, on the second attempt."
    attempts: list[str] = []
    for delta in deltas_of(frames, request_id):
        if delta["index"] == 0:
            attempts.append("")
        attempts[-1] += delta["text"]
    assert attempts == ["Half an answer", message], attempts
    assert len(FLAKY_CALLS) == 2


async def test_a_cancel_mid_stream_keeps_what_was_shown_and_the_deltas_still_make_the_message(
    services: Api,
) -> None:
    client_id = f"cancel-{uuid.uuid4().hex[:8]}"
    async with open_socket(services.url, client_id) as ws, httpx.AsyncClient(base_url=services.url) as http:
        await ws.send(json.dumps({"type": "chat", "message": "write slowly"}))
        request_id = (await recv_type(ws, "accepted"))["requestId"]
        frames = [await recv_type(ws, "delta", timeout=30)]
        assert (await http.delete(f"/api/chat/{client_id}/run")).status_code == 200
        async with asyncio.timeout(30):
            while not (frames[-1]["type"] == "response" and frames[-1]["requestId"] == request_id
                       and frames[-1]["status"] == "cancelled"):
                frames.append(await recv(ws, timeout=30))

    message = frames[-1]["lastResponse"]["message"]
    deltas = deltas_of(frames, request_id)
    assert "".join(d["text"] for d in deltas) == message
    assert message.startswith("word0") and message.startswith(frames[0]["text"])
    assert message.endswith("\n\nYour run was cancelled.")
    assert len(message) < len("".join(SLOW_WORDS))  # it stopped writing
