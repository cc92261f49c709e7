"""Failures of the LLM endpoint: retryable or terminal, with a clear message and never the key."""

from __future__ import annotations

import logging

import pytest
import structlog

from athenic.orchestrator.errors import RetryableError, TerminalError
from tests.orchestrator.planners.helpers import API_KEY, ask, chat, planner, scripted, settings_for
from tests.orchestrator.planners.run_context import SubprocessRunContext
from tests.support.nats import free_port
from tests.support.openai_standin import Reply, answer, error, tool_call

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "reply",
    [
        error(500, "upstream exploded", err_type="server_error"),
        error(503, "overloaded", err_type="server_error"),
        error(429, "Rate limit reached for requests", code="rate_limit_exceeded"),
        error(408, "request timeout"),
    ],
    ids=["500", "503", "429", "408"],
)
async def test_passing_faults_are_retryable(reply: Reply) -> None:
    async with scripted([reply]) as (llm, p):
        with pytest.raises(RetryableError, match=f"HTTP {reply.status}") as caught:
            await ask(p, chat("hello"), SubprocessRunContext())
    assert reply.body["error"]["message"] in str(caught.value)
    assert len(llm.requests) == 1  # ATHENIC_LLM_MAX_RETRIES=0: the redelivery is the retry


async def test_sdk_retries_inside_the_call_when_configured() -> None:
    """With retries on, a passing 500 is absorbed within the call; no code is run twice."""
    busy = error(500, "busy", err_type="server_error", headers={"retry-after-ms": "10"})
    async with scripted([busy, answer("fine")], ATHENIC_LLM_MAX_RETRIES="1") as (llm, p):
        result = await ask(p, chat("hello"), SubprocessRunContext())
    assert result.message == "fine"
    assert len(llm.requests) == 2


async def test_bad_key_is_terminal_and_never_shown_or_logged(
    caplog: pytest.LogCaptureFixture
) -> None:
    # OpenAI echoes (part of) the key; a careless server may echo all of it.
    rejected = error(401, f"Incorrect API key provided: {API_KEY}", code="invalid_api_key")
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logs:
        async with scripted([rejected]) as (_llm, p):
            with pytest.raises(TerminalError, match="rejected the API key") as caught:
                await ask(p, chat("hello"), SubprocessRunContext())
    assert "OPENAI_API_KEY" in str(caught.value)
    assert "HTTP 401" in str(caught.value)
    assert API_KEY not in str(caught.value)
    assert API_KEY not in caplog.text
    assert logs, "the failure is logged"
    assert API_KEY not in repr(logs)


async def test_forbidden_is_terminal() -> None:
    async with scripted([error(403, "not allowed for this project")]) as (_llm, p):
        with pytest.raises(TerminalError, match="HTTP 403"):
            await ask(p, chat("hello"), SubprocessRunContext())


@pytest.mark.parametrize("status", [400, 404])
async def test_unknown_model_is_terminal_and_names_the_setting(status: int) -> None:
    unknown = error(status, "The model `gpt-nope` does not exist", code="model_not_found")
    async with scripted([unknown], ATHENIC_LLM_MODEL="gpt-nope") as (_llm, p):
        with pytest.raises(TerminalError) as caught:
            await ask(p, chat("hello"), SubprocessRunContext())
    message = str(caught.value)
    assert "gpt-nope" in message
    assert "does not exist" in message
    assert "ATHENIC_LLM_MODEL" in message


async def test_out_of_quota_is_terminal() -> None:
    quota = error(429, "You exceeded your current quota", code="insufficient_quota")
    async with scripted([quota]) as (_llm, p):
        with pytest.raises(TerminalError, match="out of quota"):
            await ask(p, chat("hello"), SubprocessRunContext())


async def test_slow_answer_past_the_timeout_is_retryable() -> None:
    async with scripted([answer("too late", delay=5)], ATHENIC_LLM_TIMEOUT_SECONDS="0.3") as (_llm, p):
        with pytest.raises(RetryableError, match=r"did not answer within 0\.3 s"):
            await ask(p, chat("hello"), SubprocessRunContext())


async def test_unreachable_endpoint_is_retryable() -> None:
    closed = f"http://user:pw@127.0.0.1:{free_port()}/v1"
    async with planner(settings_for(closed)) as p:
        with pytest.raises(RetryableError, match="cannot reach the LLM endpoint") as caught:
            await ask(p, chat("hello"), SubprocessRunContext())
    assert "pw" not in str(caught.value)  # credentials in the URL are not shown


async def test_a_failure_after_code_ran_raises() -> None:
    async with scripted([tool_call("python", "print(1)"), error(502, "bad gateway")]) as (_llm, p):
        with pytest.raises(RetryableError, match="HTTP 502"):
            await ask(p, chat("hello", client_id="fails"), SubprocessRunContext())
