"""POST → JetStream → orchestrator → KV → GET, with real processes, and what survives crashes."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.nats import NatsServer, free_port
from tests.support.services import Api, Orchestrator, Service, wait_for_status

pytestmark = pytest.mark.e2e

ISO_MS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
FINAL = {"completed", "failed", "cancelled"}


@pytest.fixture
def orchestrator(system_nats: NatsServer, tmp_path: Path) -> Iterator[Orchestrator]:
    service = Orchestrator(system_nats.url, tmp_path, ATHENIC_CONCURRENCY="4").start()
    try:
        yield service
    finally:
        service.terminate()


def post(client: httpx.Client, message: str, client_id: str | None = None) -> tuple[str, str]:
    headers = {"x-client-id": client_id} if client_id else {}
    response = client.post("/api/chat", json={"message": message}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["clientId"], response.headers["x-request-id"]


def test_greeting_is_answered_without_code(orchestrator: Orchestrator, client: httpx.Client) -> None:
    client_id, request_id = post(client, "Hello there")
    state = wait_for_status(client, client_id, FINAL, request_id=request_id)
    assert state["status"] == "completed"
    assert state["requiresE2B"] is False
    response = state["lastResponse"]
    assert isinstance(response, dict)
    assert response["clientId"] == client_id
    assert response["requiresE2B"] is False
    assert ISO_MS_Z.match(response["timestamp"]) and ISO_MS_Z.match(str(state["timestamp"]))
    assert response["message"]


def test_the_original_example_requires_e2b(orchestrator: Orchestrator, client: httpx.Client) -> None:
    message = "Write some code to calculate the factorial of a number"
    client_id, request_id = post(client, message)
    state = wait_for_status(client, client_id, FINAL, request_id=request_id)
    assert state["lastMessage"] == message
    assert state["requiresE2B"] is True
    assert isinstance(state["lastResponse"], dict) and state["lastResponse"]["requiresE2B"] is True
    assert message in state["lastResponse"]["message"]


def test_fenced_python_runs_and_the_record_carries_its_output(
    orchestrator: Orchestrator, client: httpx.Client
) -> None:
    code = "import math\nprint(math.factorial(5))\nimport sys\nprint('warn', file=sys.stderr)\n"
    client_id, request_id = post(client, f"Please run this:\n```python\n{code}```")
    state = wait_for_status(client, client_id, FINAL, request_id=request_id)
    response = state["lastResponse"]
    assert isinstance(response, dict)
    assert response["status"] == "completed"
    [execution] = response["executions"]
    assert execution["stdout"] == "120\n"
    assert "warn" in execution["stderr"]
    assert execution["error"] is None
    assert "120" in response["message"]


def test_an_error_in_the_code_is_part_of_the_answer(orchestrator: Orchestrator, client: httpx.Client) -> None:
    client_id, request_id = post(client, "```python\nprint('a')\n1/0\n```")
    state = wait_for_status(client, client_id, FINAL, request_id=request_id)
    response = state["lastResponse"]
    assert isinstance(response, dict) and response["status"] == "completed"
    execution = response["executions"][0]
    assert execution["stdout"] == "a\n"
    assert execution["error"]["name"] == "ZeroDivisionError"
    assert "ZeroDivisionError" in response["message"]


def test_request_id_is_in_both_services_logs(
    api: Api, orchestrator: Orchestrator, client: httpx.Client
) -> None:
    client_id, request_id = post(client, "Hello")
    wait_for_status(client, client_id, FINAL, request_id=request_id)

    def lines(log: str) -> list[dict[str, object]]:
        return [json.loads(line) for line in log.splitlines() if line.startswith("{")]

    assert any(line.get("request_id") == request_id for line in lines(api.log()))
    # the "answered" line follows the record write (then the turn and the ack): wait for it
    deadline = time.monotonic() + 10
    while not any(line.get("request_id") == request_id and line.get("event") == "answered"
                  for line in lines(orchestrator.log())):
        assert time.monotonic() < deadline, "the orchestrator never logged the answer with its request id"
        time.sleep(0.05)


def test_a_slow_earlier_message_never_overwrites_a_later_answer(
    orchestrator: Orchestrator, client: httpx.Client
) -> None:
    client_id, _slow = post(client, "```python\nimport time\ntime.sleep(2)\nprint('slow')\n```")
    _, fast = post(client, "```python\nprint('fast')\n```", client_id)
    state = wait_for_status(client, client_id, {"completed"}, request_id=fast)
    assert state["lastMessage"].endswith("print('fast')\n```")  # type: ignore[union-attr]
    time.sleep(3)  # the slow one has finished by now
    final = client.get(f"/api/chat/response/{client_id}").json()
    assert final["requestId"] == fast
    assert final["lastResponse"]["executions"][0]["stdout"] == "fast\n"


def test_sigkill_while_holding_messages_loses_nothing(
    system_nats: NatsServer, client: httpx.Client, tmp_path: Path, spawned: list[Service]
) -> None:
    first = Orchestrator(system_nats.url, tmp_path, ATHENIC_CONCURRENCY="4", ATHENIC_ACK_WAIT_SECONDS="5")
    spawned.append(first.start())
    posted = [post(client, f"```python\nimport time\ntime.sleep(1.5)\nprint({i})\n```") for i in range(6)]
    posted += [post(client, f"hello {i}") for i in range(6)]
    # wait until the first orchestrator holds work, then kill it without warning
    deadline = time.monotonic() + 20
    while "answering" not in first.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    first.kill()
    second = Orchestrator(system_nats.url, tmp_path, ATHENIC_CONCURRENCY="4", ATHENIC_ACK_WAIT_SECONDS="5")
    spawned.append(second.start())
    for client_id, request_id in posted:
        state = wait_for_status(client, client_id, FINAL, timeout=60, request_id=request_id)
        assert state["status"] == "completed", state


def test_sigterm_drains_in_flight_work(
    system_nats: NatsServer, client: httpx.Client, tmp_path: Path, spawned: list[Service]
) -> None:
    service = Orchestrator(system_nats.url, tmp_path).start()
    spawned.append(service)
    client_id, request_id = post(client, "```python\nimport time\ntime.sleep(2)\nprint('done')\n```")
    wait_for_status(client, client_id, {"processing"}, request_id=request_id)
    assert service.terminate() == 0
    state = client.get(f"/api/chat/response/{client_id}").json()
    assert state["status"] == "completed"
    assert state["lastResponse"]["executions"][0]["stdout"] == "done\n"


def test_last_delivery_writes_a_failed_answer(
    system_nats: NatsServer, client: httpx.Client, tmp_path: Path, spawned: list[Service]
) -> None:
    # E2B unreachable is retryable: after the last allowed delivery the app gets a clear failure.
    dead = f"http://127.0.0.1:{free_port()}"
    service = Orchestrator(system_nats.url, tmp_path, ATHENIC_SANDBOX="e2b", E2B_API_KEY="e2b_test",
                           E2B_API_URL=dead, E2B_SANDBOX_URL=dead, ATHENIC_MAX_DELIVER="2").start()
    spawned.append(service)
    client_id, request_id = post(client, "```python\nprint(1)\n```")
    state = wait_for_status(client, client_id, {"failed"}, timeout=60, request_id=request_id)
    response = state["lastResponse"]
    assert isinstance(response, dict)
    assert "2 attempts" in response["error"]
    assert response["message"].startswith("Sorry")


def test_cancel_stops_a_running_execution(orchestrator: Orchestrator, client: httpx.Client) -> None:
    client_id, request_id = post(client, "```python\nimport time\nprint('started', flush=True)\ntime.sleep(25)\n```")
    wait_for_status(client, client_id, {"processing"}, request_id=request_id)
    time.sleep(0.5)  # let the code start
    started = time.monotonic()
    response = client.delete(f"/api/chat/{client_id}/run")
    assert response.status_code == 200, response.text
    assert response.json() == {"cancelled": True, "clientId": client_id}
    state = wait_for_status(client, client_id, {"cancelled"}, request_id=request_id, timeout=10)
    print(f"cancelled record after {time.monotonic() - started:.2f}s")
    assert state["lastResponse"]["status"] == "cancelled"  # type: ignore[index]
    # nothing runs any more: a second cancel finds nothing
    again = client.delete(f"/api/chat/{client_id}/run")
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")


def test_cancel_of_an_unknown_client_is_404(client: httpx.Client) -> None:
    assert client.delete("/api/chat/never-seen-before/run").status_code == 404
