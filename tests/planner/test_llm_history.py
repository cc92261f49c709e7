"""Conversation history per clientId in NATS KV: follow-ups work, and it stays bounded."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from nats.js.kv import KeyValue

from athenic.orchestrator.planners.history import ConversationHistory, Exchange
from tests.planner.helpers import chat, scripted
from tests.planner.models import factorial_model
from tests.planner.run_context import SubprocessRunContext
from tests.support.openai_standin import answer


async def _stored(kv: KeyValue, client_id: str) -> dict[str, Any]:
    value = (await kv.get(client_id)).value
    assert value is not None
    stored: dict[str, Any] = msgspec.json.decode(value)
    return stored


def _conversation(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in body["messages"] if m["role"] in ("user", "assistant")
            and not m.get("tool_calls")]


async def test_follow_up_sees_the_previous_turn(history_kv: KeyValue) -> None:
    async with scripted(factorial_model, history_kv) as (llm, p):
        first = await p.answer(chat("What is the factorial of 5?", client_id="alice"), SubprocessRunContext())
        second = await p.answer(chat("what about 10?", client_id="alice"), SubprocessRunContext())
        stranger = await p.answer(chat("what about 10?", client_id="bob"), SubprocessRunContext())

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
    # Another client's history is its own.
    assert stranger.message == "What would you like me to compute?"
    assert stranger.executions == []


async def test_history_stays_bounded(history_kv: KeyValue) -> None:
    numbered = lambda body: answer(f"answer {len(body['messages'])}")  # noqa: E731
    async with scripted(numbered, history_kv, ATHENIC_HISTORY_MESSAGES="4") as (llm, p):
        for n in range(1, 7):
            await p.answer(chat(f"message {n}", client_id="carol"), SubprocessRunContext())

    sent = _conversation(llm.requests[-1])
    assert [text for role, text in sent if role == "user"] == ["message 4", "message 5", "message 6"]
    assert len(sent) == 5  # two earlier exchanges (4 messages) and the new message
    stored = await _stored(history_kv, "carol")
    assert [e["user"] for e in stored["exchanges"]] == ["message 5", "message 6"]


async def test_long_messages_are_cut_in_the_history(history_kv: KeyValue) -> None:
    async with scripted(lambda _b: answer("y" * 10_000), history_kv, ATHENIC_HISTORY_MESSAGE_CHARS="500") as (llm, p):
        result = await p.answer(chat("x" * 10_000, client_id="dave"), SubprocessRunContext())
        await p.answer(chat("next", client_id="dave"), SubprocessRunContext())

    assert len(result.message) == 10_000  # the answer itself is whole
    earlier = _conversation(llm.requests[1])[:2]
    assert all(len(text) < 600 and "characters omitted" in text for _, text in earlier)


async def test_redelivered_message_is_not_its_own_history(history_kv: KeyValue) -> None:
    async with scripted(lambda _b: answer("ok"), history_kv) as (llm, p):
        again = chat("only once", client_id="erin", request_id="req-1")
        await p.answer(again, SubprocessRunContext())
        await p.answer(again, SubprocessRunContext())  # a redelivery after a crash

    assert _conversation(llm.requests[1]) == [("user", "only once")]
    stored = await _stored(history_kv, "erin")
    assert len(stored["exchanges"]) == 1


async def test_concurrent_appends_from_replicas_all_land(history_kv: KeyValue) -> None:
    """Compare-and-set: replicas appending to one client's history at once lose nothing."""
    replicas = [ConversationHistory(history_kv, max_messages=40, max_chars=1000) for _ in range(6)]
    saved = await asyncio.gather(*(
        history.append("frank", Exchange(request_id=f"r{n}", user=f"q{n}", answer=f"a{n}"))
        for n, history in enumerate(replicas)
    ))
    assert all(saved)
    kept = await replicas[0].load("frank", excluding_request="none")
    assert sorted(e.request_id for e in kept) == [f"r{n}" for n in range(6)]


async def test_history_off_sends_no_earlier_turns(history_kv: KeyValue) -> None:
    async with scripted(lambda _b: answer("ok"), history_kv, ATHENIC_HISTORY_MESSAGES="0") as (llm, p):
        await p.answer(chat("one", client_id="gina"), SubprocessRunContext())
        await p.answer(chat("two", client_id="gina"), SubprocessRunContext())
    assert _conversation(llm.requests[1]) == [("user", "two")]
