"""The app's REST contract, byte for byte, against the real api process and a real nats-server."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support.nats import NatsServer
from tests.support.services import Api

pytestmark = pytest.mark.integration

ISO_MS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def assert_problem(response: httpx.Response, status: int, mentions: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    assert mentions.lower() in body["detail"].lower(), body


def test_health_is_byte_compatible(client: httpx.Client) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.content == b'{"status":"healthy","service":"api-server"}'


def test_ready_reports_the_broker(client: httpx.Client) -> None:
    assert client.get("/api/ready").json() == {"status": "ready", "broker": "connected"}


def test_post_answers_with_a_new_uuid4_client_id(client: httpx.Client) -> None:
    response = client.post("/api/chat", json={"message": "Hello"})
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["success", "message", "clientId"]
    assert body["success"] is True
    assert body["message"] == "Chat message received and is being processed"
    assert uuid.UUID(body["clientId"]).version == 4
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_post_honours_x_client_id(client: httpx.Client) -> None:
    response = client.post("/api/chat", json={"message": "Hello"}, headers={"x-client-id": "my-phone_1"})
    assert response.json()["clientId"] == "my-phone_1"


def test_get_right_after_post_is_pending_never_404(client: httpx.Client) -> None:
    # No orchestrator is running: the message waits in the stream.
    client_id = client.post("/api/chat", json={"message": "What is 2+2?"}).json()["clientId"]
    response = client.get(f"/api/chat/response/{client_id}")
    assert response.status_code == 200
    state = response.json()
    assert state["lastMessage"] == "What is 2+2?"
    assert state["lastResponse"] is None
    assert state["status"] == "pending"
    assert state["requiresE2B"] is False
    assert ISO_MS_Z.match(state["timestamp"])


def test_unknown_client_id_is_404(client: httpx.Client) -> None:
    assert_problem(client.get(f"/api/chat/response/{uuid.uuid4()}"), 404, "no conversation")


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        (b"{not json", "json"),
        (b"[]", "message"),
        (b"{}", "message"),
        (b'{"message": 42}', "message"),
        (b'{"message": null}', "message"),
        (b'{"message": ""}', "empty"),
        (b'{"message": "   \\n "}', "empty"),
    ],
)
def test_bad_bodies_are_400_problems(client: httpx.Client, body: bytes, mentions: str) -> None:
    response = client.post("/api/chat", content=body, headers={"content-type": "application/json"})
    assert_problem(response, 400, mentions)


def test_message_over_the_limit_is_413(client: httpx.Client) -> None:
    at_limit = client.post("/api/chat", json={"message": "x" * 16 * 1024})
    assert at_limit.status_code == 200
    over = client.post("/api/chat", json={"message": "é" * (8 * 1024 + 1)})  # 16 KiB + 2 bytes of UTF-8
    assert_problem(over, 413, "limit")
    huge = client.post("/api/chat", content=b'{"message": "' + b"x" * 2_000_000 + b'"}',
                       headers={"content-type": "application/json"})
    assert huge.status_code == 413
    assert huge.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("bad", ["../etc", "a.b", ">", "*", "a b", "x" * 129, "ünï".encode(), "a/b", ""])
def test_bad_client_ids_are_400(client: httpx.Client, bad: str | bytes) -> None:
    response = client.post("/api/chat", json={"message": "hi"}, headers={"x-client-id": bad})
    assert_problem(response, 400, "x-client-id")


def test_longest_client_id_passes(client: httpx.Client) -> None:
    response = client.post("/api/chat", json={"message": "hi"}, headers={"x-client-id": "A" * 128})
    assert response.status_code == 200


@pytest.mark.parametrize("bad", ["a.b", "%3E", "%2A", "x" * 129])
def test_bad_client_ids_in_the_path_are_400(client: httpx.Client, bad: str) -> None:
    assert_problem(client.get(f"/api/chat/response/{bad}"), 400, "clientId")


def test_openapi_documents_every_answer(client: httpx.Client) -> None:
    spec = client.get("/schema/openapi.json").json()
    post = spec["paths"]["/api/chat"]["post"]
    assert {"200", "400", "413", "503"} <= set(post["responses"])
    assert "application/problem+json" in post["responses"]["400"]["content"]
    get = spec["paths"]["/api/chat/response/{client_id}"]["get"]
    assert {"200", "404"} <= set(get["responses"])


def test_broker_outage_gives_503_then_recovers(nats_server: NatsServer, tmp_path: Path) -> None:
    service = Api(nats_server.url, tmp_path).start()
    try:
        with httpx.Client(base_url=service.url, timeout=10) as client:
            before = client.post("/api/chat", json={"message": "before"})
            assert before.status_code == 200
            nats_server.stop()
            started = time.monotonic()
            response = client.post("/api/chat", json={"message": "during"})
            elapsed = time.monotonic() - started
            assert_problem(response, 503, "not accepted")
            assert response.headers["retry-after"] == "1"
            print(f"503 after {elapsed:.2f}s")
            # reads fail as fast as the POST (a phone giving up after 3 s still gets its answer)
            with httpx.Client(base_url=service.url, timeout=3) as impatient:
                assert_problem(impatient.get(f"/api/chat/response/{before.json()['clientId']}"), 503, "unavailable")
                assert_problem(impatient.get(f"/api/chat/{before.json()['clientId']}/messages"), 503, "unavailable")
                assert_problem(impatient.get(f"/api/chat/stream/{before.json()['clientId']}"), 503, "unavailable")
            socket_url = service.url.replace("http", "ws", 1) + f"/api/chat/ws/{before.json()['clientId']}"
            with connect(socket_url, open_timeout=3) as ws, pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=3)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013  # try again later
            assert client.get("/api/health").status_code == 200  # liveness never depends on the broker
            assert client.get("/api/ready").status_code == 503
            nats_server.start()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                response = client.post("/api/chat", json={"message": "after"})
                if response.status_code == 200:
                    break
                time.sleep(0.2)
            assert response.status_code == 200, "the api did not recover after the broker came back"
            client_id = response.json()["clientId"]
            assert client.get(f"/api/chat/response/{client_id}").json()["lastMessage"] == "after"
            # what was accepted before the outage outlived the broker's restart
            kept = client.get(f"/api/chat/response/{before.json()['clientId']}").json()
            assert kept["lastMessage"] == "before" and kept["requestId"] == before.headers["x-request-id"]
    finally:
        service.terminate()


def test_api_starts_while_the_broker_is_down(nats_server: NatsServer, tmp_path: Path) -> None:
    nats_server.stop()
    service = Api(nats_server.url, tmp_path)
    service.start(wait_ready=False)
    try:
        service.wait(ready=False)
        with httpx.Client(base_url=service.url, timeout=10) as http:
            assert http.get("/api/health").status_code == 200
            assert_problem(http.post("/api/chat", json={"message": "x"}), 503, "not accepted")
            nats_server.start()
            service.wait(ready=True)
            assert http.post("/api/chat", json={"message": "x"}).status_code == 200
    finally:
        service.terminate()


def test_problem_json_is_rfc9457(client: httpx.Client) -> None:
    body = json.loads(client.get("/api/chat/response/nope-unknown").content)
    assert set(body) >= {"status", "title", "detail"}
