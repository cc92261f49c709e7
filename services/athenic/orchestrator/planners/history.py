"""The conversation's earlier turns as chat messages for the model.

The history is the conversation log itself (``RunContext.history``), not a copy: each turn
becomes the user's message and the answer, with the code that ran for it shown so a follow-up
can reuse it. Long texts are cut so a long conversation stays within the model's context.
"""

from __future__ import annotations

from openai.types.chat import ChatCompletionMessageParam

from athenic.orchestrator.planners.llm_tools import clip
from athenic.shared.messages import Turn

CODE_SHOWN_PER_TURN = 4


def to_messages(turns: list[Turn], max_chars: int) -> list[ChatCompletionMessageParam]:
    messages: list[ChatCompletionMessageParam] = []
    for turn in turns:
        if turn.response is None:
            continue
        answer = clip(turn.response.message, max_chars)
        for ran in turn.response.executions[-CODE_SHOWN_PER_TURN:]:
            answer += f"\n\n[code run for this answer]\n```{ran.language}\n{clip(ran.code, max_chars)}\n```"
        messages.append({"role": "user", "content": clip(turn.message, max_chars)})
        messages.append({"role": "assistant", "content": answer})
    return messages
