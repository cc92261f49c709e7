"""E2B failing half its calls: every message is answered after retries, or fails clearly.

The orchestrator runs the real E2B SDK against the stand-in of E2B's endpoints, which
answers half of its sandbox creations with 503 and half of its executions with 500 (a
seeded coin, so a run is repeatable in distribution). A user must never wait forever: each
message ends ``completed`` with its own output, or ``failed`` saying it gave up after the
last delivery.
"""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from tests.support.e2b_standin import E2BStandIn
from tests.support.e2b_thread import serving
from tests.support.load import allow_executions
from tests.support.nats import NatsServer
from tests.support.services import Api, Orchestrator, wait_for_status

pytestmark = pytest.mark.drill

MESSAGES = 16
MAX_DELIVER = 5


class FlakyE2B(E2BStandIn):
    """The stand-in, failing each create and each execute with probability one half."""

    def __init__(self, seed: int = 7) -> None:
        super().__init__()
        self.coin = random.Random(seed)
        self.failed_calls = 0
        self.passed_calls = 0

    def _fails(self) -> bool:
        fails = self.coin.random() < 0.5
        if fails:
            self.failed_calls += 1
        else:
            self.passed_calls += 1
        return fails

    async def _create(self, request: web.Request) -> web.Response:
        if self._fails():
            return web.json_response({"code": 503, "message": "flaky stand-in"}, status=503)
        return await super()._create(request)

    async def _execute(self, request: web.Request) -> web.StreamResponse:
        if self._fails():
            return web.Response(status=500, text="flaky stand-in")
        return await super()._execute(request)


@pytest.mark.slow
def test_every_message_is_answered_or_fails_clearly_when_e2b_fails_half_its_calls(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    api = Api(nats_server.url, tmp_path, ATHENIC_RATE_LIMIT_PER_MINUTE="0").start()
    allow_executions([nats_server.url])
    with serving(FlakyE2B()) as e2b:
        orchestrator = Orchestrator(
            nats_server.url, tmp_path, ATHENIC_SANDBOX="e2b", E2B_API_KEY="e2b_test", E2B_API_URL=e2b.url,
            E2B_SANDBOX_URL=e2b.url, ATHENIC_MAX_DELIVER=str(MAX_DELIVER), ATHENIC_CONCURRENCY="8",
        ).start()
        try:
            with httpx.Client(base_url=api.url, timeout=10) as client:
                posted = []
                for index in range(MESSAGES):
                    response = client.post("/api/chat", json={"message": f"```python\nprint({index} * 3)\n```"})
                    assert response.status_code == 200, response.text
                    posted.append((index, response.json()["clientId"], response.headers["x-request-id"]))
                outcomes = {"completed": 0, "failed": 0}
                for index, client_id, request_id in posted:
                    # back-off between deliveries is 1, 2, 4, 8 s: the last one ends within ~30 s
                    state = wait_for_status(client, client_id, {"completed", "failed", "cancelled"},
                                            timeout=90, request_id=request_id)
                    answer = state["lastResponse"]
                    assert isinstance(answer, dict)
                    assert state["status"] in outcomes, state
                    outcomes[str(state["status"])] += 1
                    if state["status"] == "completed":
                        assert answer["executions"][0]["stdout"] == f"{index * 3}\n"
                    else:
                        assert answer["message"].startswith("Sorry"), answer
                        assert f"gave up after {MAX_DELIVER} attempts" in answer["error"], answer
        finally:
            orchestrator.terminate()
            api.terminate()
        print(f"E2B stand-in: {e2b.failed_calls} calls failed, {e2b.passed_calls} passed; outcomes {outcomes}")
        assert e2b.failed_calls > 0 and outcomes["completed"] > 0
