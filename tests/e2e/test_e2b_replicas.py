"""One E2B sandbox per conversation whichever orchestrator process answers, also across a rollout.

Real processes: the api, three `athenic-orchestrator`s on the E2B backend (the real SDK against
the stand-in over loopback HTTP), one nats-server. Replica A answers the first messages alone;
then B and C start and A is stopped (SIGTERM) mid-conversation, as a rollout does. All 20
messages must see the one sandbox (the list message 1 defined has 20 items in message 20), A's
shutdown must pause rather than kill, and once every replica is gone nothing is left running.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.e2b_standin import E2BStandIn
from tests.support.e2b_thread import serving
from tests.support.load import allow_executions
from tests.support.nats import NatsServer
from tests.support.services import Api, Orchestrator, Service, wait_for_status

pytestmark = pytest.mark.e2e

CLIENT = "conversation-across-replicas"


def ask(client: httpx.Client, number: int) -> str:
    code = "history = [1]" if number == 1 else f"history.append({number})"
    response = client.post("/api/chat", headers={"x-client-id": CLIENT},
                           json={"message": f"```python\n{code}\nprint(len(history))\n```"})
    assert response.status_code == 200, response.text
    return response.headers["x-request-id"]


def answered(client: httpx.Client, request_id: str) -> str:
    state = wait_for_status(client, CLIENT, {"completed", "failed", "cancelled"}, timeout=90, request_id=request_id)
    assert state["status"] == "completed", state
    answer = state["lastResponse"]
    assert isinstance(answer, dict)
    stdout = answer["executions"][0]["stdout"]
    assert isinstance(stdout, str)
    return stdout


def attached_in(service: Service) -> int:
    """How often the replica attached to the conversation's existing sandbox (its log)."""
    count = 0
    for line in service.log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "e2b sandbox attached" and entry.get("client_id") == CLIENT:
            count += 1
    return count


@pytest.mark.slow
def test_twenty_messages_see_one_sandbox_across_three_replicas_and_a_rollout(
    nats_server: NatsServer, tmp_path: Path, spawned: list[Service]
) -> None:
    api = Api(nats_server.url, tmp_path).start()
    spawned.append(api)
    allow_executions([nats_server.url])
    with serving(E2BStandIn()) as e2b:
        env = {"ATHENIC_SANDBOX": "e2b", "E2B_API_KEY": "e2b_test", "E2B_API_URL": e2b.url,
               "E2B_SANDBOX_URL": e2b.url}
        first = Orchestrator(nats_server.url, tmp_path, **env).start()
        spawned.append(first)
        with httpx.Client(base_url=api.url, timeout=10) as client:
            for number in range(1, 6):
                assert answered(client, ask(client, number)) == f"{number}\n"
            others = [Orchestrator(nats_server.url, tmp_path, **env).start() for _ in range(2)]
            spawned.extend(others)
            pending = ask(client, 6)
            # the rollout: A stops while the conversation goes on
            stopping = threading.Thread(target=first.terminate)
            stopping.start()
            assert answered(client, pending) == "6\n"
            stopping.join(60)
            assert "e2b backend closed" in first.log()
            for number in range(7, 21):
                assert answered(client, ask(client, number)) == f"{number}\n"
        assert len(e2b.creates) == 1, "one sandbox for the whole conversation"
        assert e2b.creates[0].executions == 20
        assert e2b.kills == [], "a rollout pauses, never kills"
        assert sum(attached_in(replica) for replica in others) >= 1, "another replica connected to it"
        for replica in others:
            replica.terminate()
        deadline = time.monotonic() + 30
        while e2b.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert e2b.running == [], "no replica left a sandbox billing compute"
        assert e2b.creates[0].state == "paused" and e2b.kills == []
