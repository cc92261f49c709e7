"""The LLM planner in the real services: api and orchestrator processes, configured by env alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.nats import NatsServer
from tests.support.openai_models import API_KEY, factorial_model
from tests.support.openai_standin import error, serving_in_thread
from tests.support.services import Api, Orchestrator, wait_for_status

pytestmark = pytest.mark.e2e


@pytest.fixture
def client(nats_server: NatsServer, tmp_path: Path) -> Iterator[httpx.Client]:
    api = Api(nats_server.url, tmp_path).start()
    try:
        with httpx.Client(base_url=api.url, timeout=10) as http:
            yield http
    finally:
        api.terminate()


def post(client: httpx.Client, message: str, client_id: str) -> str:
    response = client.post("/api/chat", json={"message": message}, headers={"x-client-id": client_id})
    assert response.status_code == 200, response.text
    return response.headers["x-request-id"]


def test_code_written_by_the_model_runs_and_follow_ups_work(
    nats_server: NatsServer, client: httpx.Client, tmp_path: Path
) -> None:
    with serving_in_thread(factorial_model) as llm:
        orchestrator = Orchestrator(nats_server.url, tmp_path, OPENAI_BASE_URL=llm.base_url,
                                    OPENAI_API_KEY=API_KEY, ATHENIC_LLM_MODEL="standin-model").start()
        try:
            # posted back to back: the follow-up is answered after the first, and sees it in the log
            first = post(client, "What is the factorial of 5?", "phone-1")
            second = post(client, "what about 10?", "phone-1")
            follow_up = wait_for_status(client, "phone-1", {"completed", "failed"}, request_id=second)
            history = client.get("/api/chat/phone-1/messages").json()["messages"]
            state = {"lastResponse": next(t["response"] for t in history if t["requestId"] == first)}
        finally:
            orchestrator.kill()  # its graceful shutdown is tested elsewhere

    response = state["lastResponse"]
    assert isinstance(response, dict), state
    assert response["status"] == "completed", response
    assert response["message"] == "The factorial is 120."
    assert response["requiresE2B"] is True
    assert response["executions"][0]["stdout"] == "120\n"
    assert response["executions"][0]["backend"] == "local"  # it ran in the real local sandbox
    later = follow_up["lastResponse"]
    assert isinstance(later, dict)
    assert later["message"] == "The factorial is 3628800."
    assert all(auth == f"Bearer {API_KEY}" for auth in llm.authorizations)
    assert API_KEY not in orchestrator.log()


def test_a_bad_key_fails_the_answer_once_without_retries(
    nats_server: NatsServer, client: httpx.Client, tmp_path: Path
) -> None:
    rejected = error(401, f"Incorrect API key provided: {API_KEY}", code="invalid_api_key")
    with serving_in_thread(lambda _body: rejected) as llm:
        orchestrator = Orchestrator(nats_server.url, tmp_path, OPENAI_BASE_URL=llm.base_url,
                                    OPENAI_API_KEY=API_KEY).start()
        try:
            request_id = post(client, "hello", "phone-2")
            state = wait_for_status(client, "phone-2", {"completed", "failed"}, request_id=request_id)
        finally:
            orchestrator.kill()  # its graceful shutdown is tested elsewhere

    assert state["status"] == "failed"
    response = state["lastResponse"]
    assert isinstance(response, dict)
    assert "OPENAI_API_KEY" in response["error"]
    assert API_KEY not in str(state)
    assert API_KEY not in orchestrator.log()
    assert len(llm.requests) == 1  # terminal: no redelivery, no SDK retry on a 401
