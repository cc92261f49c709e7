"""Scripted models: functions of the request body that answer as a model would, and the model
name and API key the planner tests configure (the key must never show in an answer or a log)."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from tests.support.openai_standin import Reply, answer, tool_call

API_KEY = "sk-test-4f1b9c0e7d2a-SECRET"
MODEL = "standin-model-1"


def factorial_model(body: dict[str, Any]) -> Reply:
    """A scripted model that computes factorials, and can only know WHICH from the history.

    On a user turn it finds the latest number in it and runs code for that number's factorial
    if the word "factorial" is anywhere in the conversation it was sent; after a run it reports
    the output. Without the history, "what about 10?" gets no code and no number.
    """
    messages = body["messages"]
    last = messages[-1]
    if last["role"] == "tool":
        printed = msgspec.json.decode(last["content"])["stdout"].strip()
        return answer(f"The factorial is {printed}.")
    said = " ".join(str(m.get("content") or "") for m in messages if m["role"] in ("user", "assistant"))
    numbers = re.findall(r"\d+", last["content"])
    if "factorial" in said.lower() and numbers:
        return tool_call("python", f"import math\nprint(math.factorial({numbers[-1]}))")
    return answer("What would you like me to compute?")
