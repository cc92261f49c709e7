"""The LLM planner streams: through the real SDK, the scripted server answers in chunks."""

from __future__ import annotations

from typing import Any

import pytest

from athenic.orchestrator.errors import RetryableError
from tests.orchestrator.planners.helpers import ask, chat, scripted
from tests.orchestrator.planners.run_context import SubprocessRunContext
from tests.support.openai_standin import Reply, answer, tool_call

pytestmark = pytest.mark.integration


async def test_the_answer_streams_in_pieces_that_make_the_message() -> None:
    async with scripted([answer("Paris is the capital of France.")]) as (llm, p):
        ctx = SubprocessRunContext()
        result = await ask(p, chat("capital of France?"), ctx)

    assert result.message == "Paris is the capital of France."
    assert "".join(ctx.deltas) == result.message
    assert len(ctx.deltas) == 6  # a piece per word, as the model sent them
    sent = llm.requests[0]
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


async def test_text_a_tool_round_then_more_text() -> None:
    script = iter([tool_call("python", "print(6 * 7)", text="Let me compute that.")])

    def model(body: dict[str, Any]) -> Reply:
        return next(script, None) or answer("The product is 42.")

    async with scripted(model) as (llm, p):
        ctx = SubprocessRunContext()
        result = await ask(p, chat("What is 6 times 7?"), ctx)

    assert result.message == "Let me compute that.\n\nThe product is 42."
    assert "".join(ctx.deltas) == result.message
    # what the client sees, in order: text, the run, back to planning, the rest of the text
    kinds = [kind if kind == "status" else "delta" for kind, _ in ctx.events]
    first_run = kinds.index("status", 1)
    assert "".join(t for k, t in ctx.events[:first_run] if k == "delta") == "Let me compute that."
    assert ctx.events[first_run:first_run + 2] == [("status", "running"), ("status", "planning")]
    assert "".join(t for k, t in ctx.events[first_run:] if k == "delta") == "\n\nThe product is 42."
    # the call was put together from its fragments (the arguments came in three pieces)
    assert ctx.runs == [("python", "print(6 * 7)")]
    turn = llm.requests[1]["messages"][-2]
    assert turn["content"] == "Let me compute that."
    assert turn["tool_calls"][0]["function"]["arguments"] == '{"code": "print(6 * 7)", "language": "python"}'
    assert llm.requests[1]["messages"][-1]["tool_call_id"] == turn["tool_calls"][0]["id"]


async def test_whitespace_around_the_answer_is_never_sent() -> None:
    pieces = ["\n ", "  Hello", " ", "world", " \n", "  "]
    async with scripted([answer("".join(pieces), chunks=pieces)]) as (_llm, p):
        ctx = SubprocessRunContext()
        result = await ask(p, chat("hi"), ctx)
    assert result.message == "Hello world"
    assert "".join(ctx.deltas) == "Hello world"


async def test_what_the_planner_adds_is_streamed_too() -> None:
    async with scripted([answer("The first part of a long", finish_reason="length")]) as (_llm, p):
        cut = SubprocessRunContext()
        result = await ask(p, chat("write a lot"), cut)
    assert result.message == "The first part of a long\n\n(The answer was cut at the token limit.)"
    assert "".join(cut.deltas) == result.message

    async with scripted([answer("   ")]) as (_llm, p):
        empty = SubprocessRunContext()
        result = await ask(p, chat("say nothing"), empty)
    assert result.message == "The model gave an empty answer."
    assert empty.deltas == [result.message]

    forever = lambda _body: tool_call("python", "print('again')", text="Once more.")  # noqa: E731
    async with scripted(forever, ATHENIC_LLM_MAX_STEPS="2") as (_llm, p):
        stopped = SubprocessRunContext()
        result = await ask(p, chat("loop"), stopped)
    assert result.message.startswith("Once more.\n\nOnce more.\n\nOnce more.\n\nStopped after 2 steps")
    assert "".join(stopped.deltas) == result.message


async def test_without_usage_in_the_stream_the_token_budget_still_binds() -> None:
    wordy = lambda _body: tool_call("python", "print(1)", text="x" * 2000, usage=None)  # noqa: E731
    async with scripted(wordy, ATHENIC_LLM_TOKEN_BUDGET="1200", ATHENIC_LLM_MAX_TOKENS="1000") as (llm, p):
        ctx = SubprocessRunContext()
        result = await ask(p, chat("expensive"), ctx)
    # about four characters a token: each round costs over 500, the budget stops the third
    assert len(llm.requests) == 2
    assert "ATHENIC_LLM_TOKEN_BUDGET=1200" in result.message
    assert "".join(ctx.deltas) == result.message


async def test_a_stream_that_ends_before_its_finish_is_retryable() -> None:
    cut_short = Reply(answer("never finished").body, chunks=["never ", "finished"], stop_after=2)
    async with scripted([cut_short]) as (_llm, p):
        with pytest.raises(RetryableError, match="ended its stream before the reply was finished"):
            await ask(p, chat("hi"), SubprocessRunContext())
