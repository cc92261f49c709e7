"""The WebSocket route against a real api process and nats-server: frames a Flutter client sees."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from athenic.shared import names
from athenic.shared.messages import ResponseRecord, encode, iso_timestamp
from tests.api.push.timing import PING_SECONDS
from tests.support.nats import NatsServer
from tests.support.push_client import Records, close_code, nothing_within, open_socket, recv, recv_type, ws_url
from tests.support.services import Api, Orchestrator

pytestmark = pytest.mark.integration


def new_id() -> str:
    return f"rt-{uuid.uuid4().hex[:12]}"


async def test_the_current_record_comes_at_once_then_every_change(api: Api, system_nats: NatsServer) -> None:
    client_id = new_id()
    async with Records(system_nats.url) as records:
        first = await records.put(client_id, "processing")
        async with open_socket(api.url, client_id) as ws:
            frame = await recv(ws)
            assert frame["type"] == "response"
            assert frame["status"] == "processing" and frame["revision"] == first
            assert frame["clientId"] == client_id and frame["lastMessage"] == "What is 2+2?"
            # the GET's fields, all of them
            got = httpx.get(f"{api.url}/api/chat/response/{client_id}").json()
            assert set(got) | {"type"} == set(frame)

            second = await records.put(client_id, "completed")
            frame = await recv(ws)
            assert (frame["type"], frame["status"], frame["revision"]) == ("response", "completed", second)
            assert frame["lastResponse"]["message"] == "4"

            third = await records.put(client_id, "processing", seq=2, message="And 3+3?")
            frame = await recv(ws)
            assert (frame["status"], frame["revision"], frame["lastMessage"]) == ("processing", third, "And 3+3?")


async def test_progress_events_are_pushed_as_they_come(api: Api, system_nats: NatsServer) -> None:
    client_id = new_id()
    async with Records(system_nats.url) as records:
        await records.put(client_id, "processing")
        async with open_socket(api.url, client_id) as ws:
            await recv_type(ws, "response")
            await records.progress(client_id, "status", phase="running")
            await records.progress(client_id, "stdout", data="hello\n")
            await records.progress(client_id, "stderr", data="oops\n")
            frames = [await recv(ws) for _ in range(3)]
    assert [(f["type"], f.get("phase"), f.get("data")) for f in frames] == [
        ("status", "running", None), ("stdout", None, "hello\n"), ("stderr", None, "oops\n")]
    assert all(f["clientId"] == client_id for f in frames)


async def test_two_sockets_on_one_conversation_both_get_every_change(api: Api, system_nats: NatsServer) -> None:
    client_id = new_id()
    async with Records(system_nats.url) as records:
        await records.put(client_id, "processing")
        async with open_socket(api.url, client_id) as one, open_socket(api.url, client_id) as two:
            await recv_type(one, "response")
            await recv_type(two, "response")
            final = await records.put(client_id, "completed")
            assert (await recv(one))["revision"] == final
            assert (await recv(two))["revision"] == final
        # the feed stopped with its last socket; a new socket starts a fresh one
        async with open_socket(api.url, client_id) as three:
            assert (await recv(three))["revision"] == final


async def test_reconnecting_with_the_last_revision_misses_no_final_record(api: Api, system_nats: NatsServer) -> None:
    client_id = new_id()
    async with Records(system_nats.url) as records:
        seen = await records.put(client_id, "processing")
        async with open_socket(api.url, client_id) as ws:
            assert (await recv(ws))["revision"] == seen
        # nothing changed: no repeat of what the client has, but later changes come
        async with open_socket(api.url, client_id, after=seen) as ws:
            await nothing_within(ws, 0.3)
            later = await records.put(client_id, "processing", seq=1, message="What is 2+2? (edited)")
            assert (await recv(ws))["revision"] == later
        # offline while the answer was written: it comes at once on reconnecting
        final = await records.put(client_id, "completed")
        async with open_socket(api.url, client_id, after=later) as ws:
            frame = await recv(ws)
            assert (frame["type"], frame["status"], frame["revision"]) == ("response", "completed", final)


async def test_chat_frames_are_accepted_like_posts(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.url) as http:
        client_id = (await http.post("/api/chat", json={"message": "first"})).json()["clientId"]
        async with open_socket(api.url, client_id) as ws:
            assert (await recv(ws))["status"] == "pending"
            await ws.send(json.dumps({"type": "chat", "message": "second, over the socket"}))
            accepted = await recv_type(ws, "accepted")
            assert accepted["clientId"] == client_id and accepted["success"] is True
            assert accepted["message"] == "Chat message received and is being processed"
            state = (await http.get(f"/api/chat/response/{client_id}")).json()
            assert state["lastMessage"] == "second, over the socket"
            assert state["requestId"] == accepted["requestId"]

            # bad frames are answered with an error frame; the socket stays open
            for bad, status in [("{nope", 400), ('{"type":"chat","message":""}', 400),
                                ('{"type":"dance"}', 400), ('{"type":"chat","message":7}', 400)]:
                await ws.send(bad)
                error = await recv_type(ws, "error")
                assert error["status"] == status and error["detail"], error
            await ws.send('{"type":"ping"}')
            assert (await recv_type(ws, "pong"))["type"] == "pong"


async def test_an_unused_client_id_stays_open_and_a_malformed_one_is_refused(api: Api) -> None:
    # an unused id may be followed before its first message (the socket can start the conversation)
    async with open_socket(api.url, new_id()) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}
    async with open_socket(api.url, "x" * 129) as ws:
        assert (await close_code(ws))[0] == 4400


async def test_a_bad_after_is_refused(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.url) as http:
        client_id = (await http.post("/api/chat", json={"message": "hi"})).json()["clientId"]
    url = ws_url(api.url, client_id) + "?after=minus-one"
    import websockets

    async with websockets.connect(url) as ws:
        assert (await close_code(ws))[0] == 4400


def _read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """One server frame (unmasked): opcode and payload."""
    head = _read_exact(sock, 2)
    length = head[1] & 0x7F
    if length == 126:
        length = int.from_bytes(_read_exact(sock, 2), "big")
    elif length == 127:
        length = int.from_bytes(_read_exact(sock, 8), "big")
    return head[0] & 0x0F, _read_exact(sock, length)


def _read_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data


def test_the_server_pings_idle_sockets(api: Api) -> None:
    client_id = httpx.post(f"{api.url}/api/chat", json={"message": "hi"}).json()["clientId"]
    with _raw_socket(api.port, client_id) as sock:
        sock.settimeout(PING_SECONDS * 5)
        opcodes = []
        while 0x9 not in opcodes:  # a ping, sent though the client never said a word
            opcodes.append(_read_frame(sock)[0])
        assert opcodes[0] == 0x1  # the response frame came first


@pytest.mark.slow
async def test_a_real_run_is_pushed_from_status_to_answer(api: Api, system_nats: NatsServer, tmp_path: Path) -> None:
    orchestrator = Orchestrator(system_nats.url, tmp_path).start()
    try:
        async with httpx.AsyncClient(base_url=api.url) as http:
            client_id = (await http.post("/api/chat", json={"message": "hi"})).json()["clientId"]
            async with open_socket(api.url, client_id) as ws:
                await recv_type(ws, "response", timeout=15)
                await ws.send(json.dumps({"type": "chat", "message": "Run this:\n```python\nprint(6*7)\n```"}))
                frames: list[dict[str, object]] = []
                async with asyncio.timeout(30):
                    while not (frames and frames[-1]["type"] == "response" and frames[-1]["status"] == "completed"
                               and "6*7" in str(frames[-1]["lastMessage"])):
                        frames.append(await recv(ws, timeout=30))
                # the orchestrator announces the phase after it stored the answer
                done = await recv_type(ws, "status")
    finally:
        orchestrator.terminate()
    kinds = [frame["type"] for frame in frames]
    assert "accepted" in kinds
    assert any(f["type"] == "stdout" and "42" in str(f["data"]) for f in frames), frames
    phases = [f["phase"] for f in frames if f["type"] == "status"]
    assert "running" in phases, phases
    assert done["phase"] == "completed"
    final = frames[-1]
    assert isinstance(final["lastResponse"], dict) and final["lastResponse"]["requiresE2B"] is True
    assert "42" in json.dumps(final["lastResponse"])
    # the rules planner writes its answer at once: one delta, the whole message, before the record
    deltas = [f for f in frames if f["type"] == "delta" and f["requestId"] == final["requestId"]]
    assert [(d["text"], d["index"]) for d in deltas] == [(final["lastResponse"]["message"], 0)], deltas


async def test_following_many_conversations_costs_the_broker_one_consumer(api: Api, system_nats: NatsServer) -> None:
    # nats-server caps consumers per stream (1,000): a watch per socket would refuse the 1,001st socket
    # of the whole cluster. Push by interest: core subscriptions per followed conversation, no consumer at all.
    client_ids = [new_id() for _ in range(12)]
    async with Records(system_nats.url) as records:
        for client_id in client_ids:
            await records.put(client_id, "processing")
        async with contextlib.AsyncExitStack() as stack:
            sockets = [await stack.enter_async_context(open_socket(api.url, client_id)) for client_id in client_ids]
            for ws in sockets:
                await recv_type(ws, "response")
            assert records.nc is not None
            info = await records.nc.jetstream().stream_info(names.kv_stream(names.RESPONSES_BUCKET))
            assert info.state.consumer_count == 0
            final = await records.put(client_ids[-1], "completed")
            assert (await recv(sockets[-1]))["revision"] == final


@pytest.mark.slow
async def test_an_open_socket_gets_changes_written_after_a_broker_restart(nats_server: NatsServer,
                                                                          tmp_path: Path) -> None:
    api = Api(nats_server.url, tmp_path).start()
    try:
        client_id = new_id()
        async with Records(nats_server.url) as records:
            await records.put(client_id, "processing")
        async with open_socket(api.url, client_id) as ws:
            await recv_type(ws, "response")
            nats_server.stop()
            nats_server.start()
            api.wait(ready=True)
            async with Records(nats_server.url) as records:
                final = await records.put(client_id, "completed")
            frame = await recv_type(ws, "response", timeout=15)  # the watch resumes after missed heartbeats
            assert (frame["status"], frame["revision"]) == ("completed", final)
    finally:
        api.terminate()


async def test_a_frame_larger_than_a_post_body_closes_the_socket(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.url) as http:
        client_id = (await http.post("/api/chat", json={"message": "hi"})).json()["clientId"]
    async with open_socket(api.url, client_id) as ws:
        await recv(ws)
        await ws.send(json.dumps({"type": "chat", "message": "x" * 200_000}))
        assert (await close_code(ws))[0] == 1009  # message too big


def _raw_socket(port: int, client_id: str) -> socket.socket:
    """A WebSocket client that reads only when told to (a phone gone into a tunnel)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall((f"GET /api/chat/ws/{client_id} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    handshake = b""
    while b"\r\n\r\n" not in handshake:
        handshake += sock.recv(1)
    assert handshake.startswith(b"HTTP/1.1 101")
    return sock


async def test_a_client_that_stops_reading_is_dropped_not_buffered(system_nats: NatsServer, tmp_path: Path) -> None:
    api = Api(system_nats.url, tmp_path, ATHENIC_WS_PING_SECONDS="600").start()  # no ping timeout here
    try:
        client_id = new_id()
        async with Records(system_nats.url) as records:
            await records.put(client_id, "processing")
            sock = _raw_socket(api.port, client_id)
            with sock:
                assert _read_frame(sock)[0] == 0x1  # the response frame
                # the client reads nothing while its run prints 40 MB
                assert records.nc is not None
                event = {"type": "stdout", "clientId": client_id, "requestId": "req-1", "timestamp": "t",
                         "data": "x" * 40_000}
                payload = json.dumps(event).encode()
                for _ in range(1000):
                    await records.nc.publish(names.event_subject(client_id), payload)
                await records.nc.flush()
                await asyncio.sleep(0.5)
                frames = 0
                while True:  # it reads again: what was buffered, then the close
                    opcode, data = await asyncio.to_thread(_read_frame, sock)
                    if opcode == 0x8:
                        break
                    frames += 1
        assert int.from_bytes(data[:2], "big") == 1013 and b"too slow" in data
        assert frames < 1000  # the backlog was dropped, not held in the api's memory
    finally:
        api.terminate()


async def test_the_record_budgets_note_reaches_the_client_as_a_delta(
    api: Api, system_nats: NatsServer, tmp_path: Path
) -> None:
    orchestrator = Orchestrator(system_nats.url, tmp_path, ATHENIC_RECORD_MAX_BYTES="16384").start()
    try:
        async with httpx.AsyncClient(base_url=api.url) as http:
            client_id = (await http.post("/api/chat", json={"message": "hi"})).json()["clientId"]
            async with open_socket(api.url, client_id) as ws:
                await recv_type(ws, "response", timeout=15)
                await ws.send(json.dumps({"type": "chat", "message": "```python\nprint('x' * 100_000)\n```"}))
                request_id = (await recv_type(ws, "accepted"))["requestId"]
                frames: list[dict[str, Any]] = []
                async with asyncio.timeout(30):
                    while not (frames and frames[-1]["type"] == "response" and frames[-1]["requestId"] == request_id
                               and frames[-1]["status"] == "completed"):
                        frames.append(await recv(ws, timeout=30))
    finally:
        orchestrator.terminate()
    message = frames[-1]["lastResponse"]["message"]
    assert "part of it was left out" in message  # the budget cut the run's stdout and said so
    deltas = [f["text"] for f in frames if f["type"] == "delta" and f["requestId"] == request_id]
    assert "".join(deltas) == message


async def test_updates_reach_the_socket_in_the_order_the_broker_sent_them(api: Api, system_nats: NatsServer) -> None:
    # Progress events and record changes come on two subjects (two subscriptions): interleaved and
    # sent in one write, as a loaded orchestrator's flush does, they must not be regrouped by kind
    # (a delta after the record it belongs in, a final status before the record it follows).
    client_id = new_id()
    async with Records(system_nats.url) as records:
        first = await records.put(client_id, "processing")
        async with open_socket(api.url, client_id) as ws:
            assert (await recv_type(ws, "response"))["revision"] == first
            assert records.nc is not None
            expected: list[tuple[str, object]] = []
            for step in range(1, 7):
                status = "completed" if step == 6 else "processing"
                record = ResponseRecord(last_message="m", last_response=None, requires_e2b=False, status=status,
                                        request_id="req-1", seq=1, updated_at=iso_timestamp())
                event = {"type": "stdout", "clientId": client_id, "requestId": "req-1",
                         "timestamp": iso_timestamp(), "data": f"line {step}"}
                await records.nc.publish(names.event_subject(client_id), json.dumps(event).encode())
                await records.nc.publish(names.record_subject(client_id), encode(record),
                                         headers={names.HDR_SEQUENCE: str(first + step)})
                expected += [("stdout", f"line {step}"), ("response", first + step)]
            await records.nc.flush()  # (one write: the api reads them in one go)
            got: list[tuple[str, object]] = []
            while len(got) < len(expected):
                frame = await recv(ws)
                got.append((frame["type"], frame["data"] if frame["type"] == "stdout" else frame["revision"]))
    assert got == expected
