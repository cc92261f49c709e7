"""The broker goes away while a message is being answered and stays away while its answer is written.

The answer cannot be written; what a user must not notice is any lasting effect: the
message is answered once the broker is back (redelivered), and so is the next one.
With one slot, a slot lost to the failed write would leave every later message unanswered.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.support.nats import NatsServer
from tests.support.services import Api, Orchestrator, wait_for_status

pytestmark = pytest.mark.drill

FINAL = {"completed", "failed", "cancelled"}


@pytest.mark.slow
def test_a_write_lost_to_an_outage_is_retried_and_the_worker_keeps_consuming(tmp_path: Path) -> None:
    nats = NatsServer(tmp_path / "jetstream").start()
    api = Api(nats.url, tmp_path).start()
    orchestrator = Orchestrator(nats.url, tmp_path, ATHENIC_CONCURRENCY="1", ATHENIC_ACK_WAIT_SECONDS="5").start()
    try:
        with httpx.Client(base_url=api.url, timeout=10) as client:
            slow = "```python\nimport time\ntime.sleep(1)\nprint('one')\n```"
            first = client.post("/api/chat", json={"message": slow})
            assert first.status_code == 200
            client_id, request_id = first.json()["clientId"], first.headers["x-request-id"]
            wait_for_status(client, client_id, {"processing"}, request_id=request_id)
            nats.kill()
            # The run ends and its answer is written while the broker is away. (A fixed time:
            # waiting instead for the orchestrator to log the failed write, "answer interrupted
            # by a broker fault", timed out after 60 s in one clean-clone run; not understood yet.)
            time.sleep(8)
            nats.start()
            api.wait(ready=True)

            state = wait_for_status(client, client_id, FINAL, timeout=60, request_id=request_id)
            assert state["status"] == "completed"
            assert state["lastResponse"]["executions"][0]["stdout"] == "one\n"  # type: ignore[index]

            second = client.post("/api/chat", json={"message": "```python\nprint('two')\n```"})
            assert second.status_code == 200
            state = wait_for_status(client, second.json()["clientId"], FINAL, timeout=60,
                                    request_id=second.headers["x-request-id"])
            assert state["lastResponse"]["executions"][0]["stdout"] == "two\n"  # type: ignore[index]
    finally:
        orchestrator.kill()
        api.terminate()
        nats.stop()
