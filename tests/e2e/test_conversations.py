"""Conversations with real processes: every message answered in order and kept, busy policies,
the history route, idempotent retries, sockets that start a conversation, the later app's routes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.nats import NatsServer
from tests.support.push_client import open_socket, recv_type
from tests.support.services import Api, Orchestrator, Service, wait_for_status

pytestmark = pytest.mark.e2e

FINAL = {"completed", "failed", "cancelled"}


@pytest.fixture(scope="module")
def orchestrator(system_nats: NatsServer, module_tmp: Path) -> Iterator[Orchestrator]:
    service = Orchestrator(system_nats.url, module_tmp, ATHENIC_CONCURRENCY="4").start()
    try:
        yield service
    finally:
        service.terminate()


def post(client: httpx.Client, message: str, client_id: str | None = None, **headers: str) -> httpx.Response:
    sent = {key.replace("_", "-"): value for key, value in headers.items()}
    if client_id is not None:
        sent["x-client-id"] = client_id
    return client.post("/api/chat", json={"message": message}, headers=sent)


def accepted(response: httpx.Response) -> tuple[str, str]:
    assert response.status_code == 200, response.text
    return response.json()["clientId"], response.headers["x-request-id"]


def code(source: str) -> str:
    return f"```python\n{source}\n```"


def history(client: httpx.Client, client_id: str, **params: Any) -> dict[str, Any]:
    got = client.get(f"/api/chat/{client_id}/messages", params=params)
    assert got.status_code == 200, got.text
    page: dict[str, Any] = got.json()
    return page


def wait_for_turns(client: httpx.Client, client_id: str, count: int, timeout: float = 60) -> list[dict[str, Any]]:
    """The conversation's turns, newest first, once ``count`` of them are final."""
    deadline = time.monotonic() + timeout
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        items = history(client, client_id, limit=100)["messages"]
        if len(items) >= count and all(item["status"] in FINAL for item in items):
            return items
        time.sleep(0.05)
    raise AssertionError(f"{client_id}: not {count} final turns; got {items}")


def stdout_of(turn: dict[str, Any]) -> str:
    return str(turn["response"]["executions"][0]["stdout"])


def test_messages_posted_back_to_back_are_all_answered_in_order(
    orchestrator: Orchestrator, client: httpx.Client
) -> None:
    client_id, first = accepted(post(client, code("import time\ntime.sleep(1.5)\nprint('one')")))
    _, second = accepted(post(client, code("print('two')"), client_id))
    _, third = accepted(post(client, code("print('three')"), client_id))

    turns = wait_for_turns(client, client_id, 3)
    assert [t["requestId"] for t in turns] == [third, second, first]  # newest first
    assert [stdout_of(t) for t in turns] == ["three\n", "two\n", "one\n"]
    assert all(t["status"] == "completed" for t in turns)
    # answered one after another in submission order: each finished after the one before
    finished = [t["response"]["timestamp"] for t in reversed(turns)]
    assert finished == sorted(finished)
    started = [t["response"]["executions"][0]["startedAt"] for t in reversed(turns)]
    assert started[1] >= finished[0] and started[2] >= finished[1]
    # the latest-response route is unchanged: the newest message and its answer
    latest = client.get(f"/api/chat/response/{client_id}").json()
    assert latest["requestId"] == third and latest["lastResponse"]["executions"][0]["stdout"] == "three\n"


def answering(service: Service, request_id: str) -> bool:
    for line in service.log().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == "answering" and entry.get("request_id") == request_id:
                return True
    return False


def test_order_holds_across_two_orchestrators_and_a_sigkill(
    nats_server: NatsServer, tmp_path: Path, spawned: list[Service]
) -> None:
    api = Api(nats_server.url, tmp_path)
    spawned.append(api.start())
    replicas = [Orchestrator(nats_server.url, tmp_path, ATHENIC_CONCURRENCY="2", ATHENIC_ACK_WAIT_SECONDS="5")
                for _ in range(2)]
    for replica in replicas:
        spawned.append(replica.start())
    with httpx.Client(base_url=api.url, timeout=10) as client:
        client_id, first = accepted(post(client, code("import time\ntime.sleep(2)\nprint(1)")))
        posted = [first] + [accepted(post(client, code(f"print({n})"), client_id))[1] for n in range(2, 5)]
        deadline = time.monotonic() + 20
        holder = None
        while holder is None and time.monotonic() < deadline:
            holder = next((r for r in replicas if answering(r, first)), None)
            time.sleep(0.02)
        assert holder is not None, "no replica started the first message"
        holder.kill()  # without warning, while it holds the conversation
        turns = wait_for_turns(client, client_id, 4, timeout=90)
    assert [t["requestId"] for t in reversed(turns)] == posted  # every message once, in order
    assert [stdout_of(t) for t in reversed(turns)] == ["1\n", "2\n", "3\n", "4\n"]


def test_interrupt_cancels_the_running_turn_and_answers_the_new_message(
    orchestrator: Orchestrator, client: httpx.Client
) -> None:
    client_id, slow = accepted(post(client, code("import time\ntime.sleep(30)")))
    wait_for_status(client, client_id, {"processing"}, request_id=slow)
    _, queued = accepted(post(client, code("print('queued')"), client_id))
    sent = time.monotonic()
    _, urgent = accepted(post(client, "hello again", client_id, x_on_busy="interrupt"))

    deadline = time.monotonic() + 10
    cancelled_after = None
    while time.monotonic() < deadline:
        items = {t["requestId"]: t for t in history(client, client_id)["messages"]}
        if cancelled_after is None and items[slow]["status"] == "cancelled":
            cancelled_after = time.monotonic() - sent
        if items[urgent]["status"] in FINAL:
            break
        time.sleep(0.02)
    assert cancelled_after is not None and cancelled_after < 1.0, cancelled_after
    assert items[slow]["status"] == "cancelled"
    assert items[queued]["status"] == "cancelled"  # interrupt: the new message is answered next
    assert items[urgent]["status"] == "completed"
    assert "Hello" in items[urgent]["response"]["message"]


def test_reject_refuses_while_busy_and_accepts_once_idle(orchestrator: Orchestrator, client: httpx.Client) -> None:
    client_id, slow = accepted(post(client, code("import time\ntime.sleep(1)\nprint('done')")))
    refused = post(client, "not now", client_id, x_on_busy="reject")
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "nothing was stored" in refused.json()["detail"]
    wait_for_status(client, client_id, FINAL, request_id=slow)
    wait_for_turns(client, client_id, 1)
    _, later = accepted(post(client, "now then", client_id, x_on_busy="reject"))
    turns = wait_for_turns(client, client_id, 2)
    assert [t["requestId"] for t in turns] == [later, slow]  # the refused message left no turn
    bad = post(client, "?", client_id, x_on_busy="sometimes")
    assert bad.status_code == 400 and "x-on-busy" in bad.json()["detail"]


def test_history_pages_over_45_turns(orchestrator: Orchestrator, client: httpx.Client) -> None:
    client_id, _ = accepted(post(client, "hello 0"))
    for n in range(1, 45):
        accepted(post(client, f"note {n}", client_id))
    wait_for_turns(client, client_id, 45)

    pages, before = [], None
    while True:
        page = history(client, client_id, **({"before": before} if before else {}))
        assert page["clientId"] == client_id
        pages.append(page["messages"])
        before = page["nextBefore"]
        if before is None:
            break
    assert [len(p) for p in pages] == [20, 20, 5]
    messages = [t["message"] for p in pages for t in p]
    assert messages == [f"note {n}" for n in range(44, 0, -1)] + ["hello 0"]  # no duplicates, no gaps
    assert set(pages[0][0]) >= {"requestId", "message", "submittedAt", "status", "response"}

    for params in ({"limit": 0}, {"limit": 101}, {"limit": "ten"}, {"before": 0}, {"before": "x"}):
        bad = client.get(f"/api/chat/{client_id}/messages", params=params)
        assert bad.status_code == 400, (params, bad.text)
    assert client.get("/api/chat/never-used-conversation/messages").status_code == 404
    assert client.get("/api/chat/bad.id/messages").status_code == 400


def started_pair(nats_server: NatsServer, tmp_path: Path, spawned: list[Service], **env: str) -> Api:
    """An api and an orchestrator of their own, both with ``env``."""
    api = Api(nats_server.url, tmp_path, **env)
    spawned.append(api.start())
    spawned.append(Orchestrator(nats_server.url, tmp_path, **env).start())
    return api


def test_retention_drops_the_oldest_turns(nats_server: NatsServer, tmp_path: Path,
                                          spawned: list[Service]) -> None:
    api = started_pair(nats_server, tmp_path, spawned, ATHENIC_TURNS_PER_CONVERSATION="3")
    with httpx.Client(base_url=api.url, timeout=10) as http:
        client_id, _ = accepted(post(http, "hello 1"))
        for n in range(2, 6):
            accepted(post(http, f"hello {n}", client_id))
        turns = wait_for_turns(http, client_id, 3)
        deadline = time.monotonic() + 20
        while len(turns) != 3 or turns[0]["message"] != "hello 5":
            assert time.monotonic() < deadline, turns
            turns = history(http, client_id)["messages"]
            time.sleep(0.05)
        assert [t["message"] for t in turns] == ["hello 5", "hello 4", "hello 3"]
        assert history(http, client_id)["nextBefore"] is None


def test_age_retention_drops_turns(nats_server: NatsServer, tmp_path: Path, spawned: list[Service]) -> None:
    api = started_pair(nats_server, tmp_path, spawned, ATHENIC_TURN_MAX_AGE_SECONDS="2")
    with httpx.Client(base_url=api.url, timeout=10) as http:
        client_id, _ = accepted(post(http, "hello"))
        assert len(wait_for_turns(http, client_id, 1)) == 1
        deadline = time.monotonic() + 30
        while history(http, client_id)["messages"]:
            assert time.monotonic() < deadline, "the turn outlived its retention"
            time.sleep(0.2)


def test_the_same_post_retried_with_one_key_is_one_turn(
    system_nats: NatsServer, orchestrator: Orchestrator, tmp_path: Path, spawned: list[Service]
) -> None:
    first_api = Api(system_nats.url, tmp_path)
    spawned.append(first_api.start())
    answers = []
    with httpx.Client(base_url=first_api.url, timeout=10) as http:
        for _ in range(5):
            answers.append(accepted(post(http, code("print('once')"), Idempotency_Key="phone-retry-1")))
        first_api.terminate()
    second_api = Api(system_nats.url, tmp_path)  # the retry reaches another api process
    spawned.append(second_api.start())
    with httpx.Client(base_url=second_api.url, timeout=10) as http:
        answers.append(accepted(post(http, code("print('once')"), Idempotency_Key="phone-retry-1")))
        assert len(set(answers)) == 1, answers  # same clientId, same x-request-id
        client_id, request_id = answers[0]
        # a later message is answered after every earlier one: a duplicate turn would show before it
        _, later = accepted(post(http, "hello after the retries", client_id))
        turns = wait_for_turns(http, client_id, 2)
        assert [t["requestId"] for t in turns] == [later, request_id]
        assert stdout_of(turns[1]) == "once\n"
        other = post(http, "another message", Idempotency_Key="phone-retry-1")
        assert other.status_code == 422, other.text
        assert other.headers["content-type"].startswith("application/problem+json")
        assert post(http, "x", Idempotency_Key="bad key with spaces").status_code == 400
        assert post(http, "x", Idempotency_Key="k" * 129).status_code == 400


def test_the_later_app_posts_a_body_client_id_and_polls_the_session(
    orchestrator: Orchestrator, client: httpx.Client
) -> None:
    client_id = f"later-{time.time_ns()}"
    body = {"message": "Hello there", "clientId": client_id, "userId": "u-1", "organisationId": "org-9"}
    response = client.post("/api/chat", json=body)
    assert response.status_code == 200 and response.json()["clientId"] == client_id
    deadline = time.monotonic() + 30
    while True:
        session = client.get(f"/api/chat/session/{client_id}")
        assert session.status_code == 200, session.text
        state = session.json()
        assert state["processingState"] in {"submitted", "processing", "completed"}, state
        if state["processingState"] == "completed":
            break
        assert "lastResponse" not in state  # absent until answered
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert state["clientId"] == client_id and state["lastMessage"] == "Hello there"
    assert state["lastResponse"].startswith("Hello!") and state["requiresE2B"] is False
    # the header wins over the body
    header_id = f"header-{time.time_ns()}"
    both = client.post("/api/chat", json=body, headers={"x-client-id": header_id})
    assert both.json()["clientId"] == header_id
    assert client.post("/api/chat", json={"message": "x", "clientId": "../etc"}).status_code == 400
    assert client.post("/api/chat", json={"message": "x", "clientId": 7}).status_code == 400
    assert client.get("/api/chat/session/never-seen-session").status_code == 404


async def test_a_socket_opened_before_the_conversation_exists_sees_its_first_exchange(
    orchestrator: Orchestrator, api: Api
) -> None:
    client_id = f"socket-first-{time.time_ns()}"
    async with open_socket(api.url, client_id) as ws:
        await ws.send(json.dumps({"type": "chat", "message": code("print('from the socket')")}))
        accepted_frame = await recv_type(ws, "accepted")
        assert accepted_frame["clientId"] == client_id
        running = await recv_type(ws, "status", timeout=20)
        assert running["requestId"] == accepted_frame["requestId"]
        out = await recv_type(ws, "stdout", timeout=20)
        assert out["data"].startswith("from the socket")
        while True:
            frame = await recv_type(ws, "response", timeout=20)
            if frame["status"] in FINAL:
                break
        assert frame["lastResponse"]["executions"][0]["stdout"] == "from the socket\n"
        # a chat frame takes the busy policy and an idempotency key too
        await ws.send(json.dumps({"type": "chat", "message": "hi", "onBusy": "sometimes"}))
        error = await recv_type(ws, "error")
        assert error["status"] == 400 and "x-on-busy" in error["detail"]
        await ws.send(json.dumps({"type": "chat", "message": "hello", "idempotencyKey": "sock-1"}))
        again_frames = [await recv_type(ws, "accepted")]
        await ws.send(json.dumps({"type": "chat", "message": "hello", "idempotencyKey": "sock-1"}))
        again_frames.append(await recv_type(ws, "accepted"))
        assert again_frames[0]["requestId"] == again_frames[1]["requestId"]
