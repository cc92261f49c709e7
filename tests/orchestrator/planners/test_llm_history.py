"""The conversation log is the model's history: follow-ups work, and what is sent stays bounded.

The worker appends each answered turn to the log (tests/e2e covers that with real processes);
here ``helpers.ask`` does the same into the run context's list, and the planner reads it back
through ``RunContext.history``.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.orchestrator.planners.helpers import ask, chat, scripted
from tests.orchestrator.planners.run_context import SubprocessRunContext
from tests.support.openai_models import factorial_model
from tests.support.openai_standin import answer

pytestmark = pytest.mark.integration


def _conversation(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in body["messages"] if m["role"] in ("user", "assistant")
            and not m.get("tool_calls")]


async def test_follow_up_sees_the_previous_turn() -> None:
    alice, bob = SubprocessRunContext(), SubprocessRunContext()
    async with scripted(factorial_model) as (llm, p):
        first = await ask(p, chat("What is the factorial of 5?", client_id="alice"), alice)
        second = await ask(p, chat("what about 10?", client_id="alice"), SubprocessRunContext(turns=alice.turns))
        stranger = await ask(p, chat("what about 10?", client_id="bob"), bob)

    assert first.message == "The factorial is 120."
    assert second.message == "The factorial is 3628800."
    assert second.executions[0].stdout == "3628800\n"
    # What the model was sent for the follow-up: the earlier exchange, then the new message.
    conversation = _conversation(llm.requests[2])
    assert conversation[0] == ("user", "What is the factorial of 5?")
    assert conversation[1][0] == "assistant"
    assert conversation[1][1].startswith("The factorial is 120.")
    assert "math.factorial(5)" in conversation[1][1]  # the code that ran is part of the history
    assert conversation[2] == ("user", "what about 10?")
    # Another conversation's history is its own.
    assert stranger.message == "What would you like me to compute?"
    assert stranger.executions == []


async def test_history_sent_stays_bounded() -> None:
    numbered = lambda body: answer(f"answer {len(body['messages'])}")  # noqa: E731
    turns = SubprocessRunContext().turns
    async with scripted(numbered, ATHENIC_HISTORY_MESSAGES="4") as (llm, p):
        for n in range(1, 7):
            await ask(p, chat(f"message {n}", client_id="carol"), SubprocessRunContext(turns=turns))

    sent = _conversation(llm.requests[-1])
    assert [text for role, text in sent if role == "user"] == ["message 4", "message 5", "message 6"]
    assert len(sent) == 5  # two earlier exchanges (4 messages) and the new message


async def test_long_messages_are_cut_in_the_history() -> None:
    turns = SubprocessRunContext().turns
    async with scripted(lambda _b: answer("y" * 10_000), ATHENIC_HISTORY_MESSAGE_CHARS="500") as (llm, p):
        result = await ask(p, chat("x" * 10_000, client_id="dave"), SubprocessRunContext(turns=turns))
        await ask(p, chat("next", client_id="dave"), SubprocessRunContext(turns=turns))

    assert len(result.message) == 10_000  # the answer itself is whole
    earlier = _conversation(llm.requests[1])[:2]
    assert all(len(text) < 600 and "characters omitted" in text for _, text in earlier)


async def test_redelivered_message_is_not_its_own_history() -> None:
    turns = SubprocessRunContext().turns
    async with scripted(lambda _b: answer("ok")) as (llm, p):
        again = chat("only once", client_id="erin", request_id="req-1")
        await ask(p, again, SubprocessRunContext(turns=turns))
        await ask(p, again, SubprocessRunContext(turns=turns))  # a redelivery after a crash

    assert _conversation(llm.requests[1]) == [("user", "only once")]


async def test_history_off_sends_no_earlier_turns() -> None:
    turns = SubprocessRunContext().turns
    async with scripted(lambda _b: answer("ok"), ATHENIC_HISTORY_MESSAGES="0") as (llm, p):
        await ask(p, chat("one", client_id="gina"), SubprocessRunContext(turns=turns))
        await ask(p, chat("two", client_id="gina"), SubprocessRunContext(turns=turns))
    assert _conversation(llm.requests[1]) == [("user", "two")]
