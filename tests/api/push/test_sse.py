"""The Server-Sent Events route: the same objects as the WebSocket, resumable with Last-Event-ID."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.nats import NatsServer
from tests.support.push_client import Records, SseEvent, next_sse, sse_events
from tests.support.services import Api, Orchestrator

pytestmark = pytest.mark.integration


def new_id() -> str:
    return f"sse-{uuid.uuid4().hex[:12]}"


async def test_the_stream_sends_the_record_progress_and_changes(api: Api, system_nats: NatsServer) -> None:
    client_id = new_id()
    async with Records(system_nats.url) as records, httpx.AsyncClient(base_url=api.url, timeout=10) as http:
        first = await records.put(client_id, "processing")
        async with http.stream("GET", f"/api/chat/stream/{client_id}") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = sse_events(response)
            opening = await next_sse(events, "response")
            assert opening["id"] == str(first)
            assert opening.data["type"] == "response" and opening.data["status"] == "processing"
            assert opening.data["revision"] == first

            await records.progress(client_id, "stdout", data="line one\nline two")
            out = await next_sse(events, "stdout")
            assert "id" not in out  # progress events keep the client's Last-Event-ID on the record
            assert out.data == {**out.data, "type": "stdout", "clientId": client_id, "data": "line one\nline two"}

            final = await records.put(client_id, "completed")
            answered = await next_sse(events, "response")
            assert answered["id"] == str(final) and answered.data["status"] == "completed"


async def test_the_answer_comes_as_delta_events_before_the_record(
    api: Api, system_nats: NatsServer, tmp_path: Path
) -> None:
    orchestrator = Orchestrator(system_nats.url, tmp_path).start()  # the rules planner
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
            first = await http.post("/api/chat", json={"message": "hello"})
            client_id = first.json()["clientId"]
            async with http.stream("GET", f"/api/chat/stream/{client_id}") as response:
                events = sse_events(response)
                await next_sse(events, "response")
                posted = await http.post("/api/chat", json={"message": "how are you?"},
                                         headers={"x-client-id": client_id})
                request_id = posted.headers["x-request-id"]
                seen: list[SseEvent] = []
                async with asyncio.timeout(30):
                    async for event in events:
                        seen.append(event)
                        if (event.get("event") == "response" and event.data["requestId"] == request_id
                                and event.data["status"] == "completed"):
                            break
    finally:
        orchestrator.terminate()
    deltas = [e for e in seen if e.get("event") == "delta" and e.data["requestId"] == request_id]
    message = seen[-1].data["lastResponse"]["message"]
    assert "how are you?" in message
    assert [d.data["text"] for d in deltas] == [message]
    assert deltas[0].data["type"] == "delta" and deltas[0].data["clientId"] == client_id
    assert "id" not in deltas[0]  # Last-Event-ID stays on the record


async def test_last_event_id_resumes_without_repeat_and_without_loss(api: Api, system_nats: NatsServer) -> None:
    client_id = new_id()
    async with Records(system_nats.url) as records, httpx.AsyncClient(base_url=api.url, timeout=10) as http:
        seen = await records.put(client_id, "processing")
        # reconnecting with the revision it has: only keep-alives until something changes
        async with http.stream("GET", f"/api/chat/stream/{client_id}",
                               headers={"Last-Event-ID": str(seen)}) as response:
            events = sse_events(response)
            first = await anext(events)
            assert first.get("comment") == "keep-alive", first  # proxies see bytes on idle streams
        final = await records.put(client_id, "completed")
        async with http.stream("GET", f"/api/chat/stream/{client_id}",
                               headers={"Last-Event-ID": str(seen)}) as response:
            event = await anext(sse_events(response))
            assert event["event"] == "response" and event["id"] == str(final)
            assert event.data["status"] == "completed"
        async with http.stream("GET", f"/api/chat/stream/{client_id}?after={final}") as response:
            assert (await anext(sse_events(response))).get("comment") == "keep-alive"


async def test_unknown_client_id_is_a_404_problem_before_any_event(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
        response = await http.get(f"/api/chat/stream/{new_id()}")
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "no conversation" in response.json()["detail"]
        assert (await http.get("/api/chat/stream/bad.id")).status_code == 400


def test_the_stream_route_is_in_the_openapi_document(api: Api) -> None:
    document = httpx.get(f"{api.url}/schema/openapi.json").json()
    route = document["paths"]["/api/chat/stream/{client_id}"]["get"]
    assert "text/event-stream" in route["responses"]["200"]["content"]
    assert {"400", "401", "404", "503"} <= set(route["responses"])


async def test_streams_end_as_soon_as_the_api_shuts_down(system_nats: NatsServer, tmp_path: Path) -> None:
    # uvicorn would hold an SSE response until its grace period (10 s) ran out; the client
    # must reconnect (to another replica) at once.
    api = Api(system_nats.url, tmp_path).start()
    try:
        client_id = new_id()
        async with Records(system_nats.url) as records:
            await records.put(client_id, "processing")
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as http, \
                http.stream("GET", f"/api/chat/stream/{client_id}") as response:
            events = sse_events(response)
            await next_sse(events, "response")
            assert api.proc is not None
            api.proc.send_signal(signal.SIGTERM)
            rest = [event async for event in events]  # ends cleanly, well before the grace period
            assert all(event.get("event") != "error" for event in rest), rest
            assert await asyncio.to_thread(api.proc.wait, 5) is not None
    finally:
        api.terminate()
