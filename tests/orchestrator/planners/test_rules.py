"""The rules planner decides requiresE2B and runs every fenced block it can."""

from __future__ import annotations

import pytest

from athenic.orchestrator.planners.rules import RulesPlanner, describe, fenced_blocks, needs_code
from athenic.shared.messages import ChatRequest, Execution, Phase

pytestmark = pytest.mark.unit


class RecordingContext:
    """Stands in for the worker's Job: records what the planner asks to run."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, str]] = []
        self.phases: list[Phase] = []

    @property
    def languages(self) -> frozenset[str]:
        return frozenset({"python"})

    async def phase(self, phase: Phase) -> None:
        self.phases.append(phase)

    async def run_code(self, language: str, code: str) -> Execution:
        self.ran.append((language, code))
        return Execution(language=language, code=code, stdout="120\n")


def request(message: str) -> ChatRequest:
    return ChatRequest(request_id="r", client_id="c", message=message, submitted_at="t")


def test_fences() -> None:
    assert fenced_blocks("x\n```python\nprint(1)\n```\n```py\nprint(2)\n```") == [
        ("python", "print(1)\n"), ("python", "print(2)\n")]
    assert fenced_blocks("```\nprint(3)\n```") == [("python", "print(3)\n")]


def test_the_first_run_is_told_from_the_message_before_planning() -> None:
    planner, python = RulesPlanner(), frozenset({"python"})
    assert planner.first_run(request("```sh\nls\n```\n```py\nprint(1)\n```"), python) == "python"
    assert planner.first_run(request("```bash\nls\n```"), python) is None  # not a language it can run
    assert planner.first_run(request("Write code to compute a factorial"), python) is None  # nothing to run


def test_intent() -> None:
    assert needs_code("Write some code to calculate the factorial of a number")
    assert not needs_code("Hello")
    assert not needs_code("What a lovely day")


async def test_fenced_code_runs_and_the_answer_says_what_it_printed() -> None:
    ctx = RecordingContext()
    answer = await RulesPlanner().answer(request("run\n```python\nprint(120)\n```"), ctx)
    assert ctx.ran == [("python", "print(120)\n")]
    assert answer.requires_e2b
    assert "120" in answer.message


async def test_unsupported_language_is_explained_not_run() -> None:
    ctx = RecordingContext()
    answer = await RulesPlanner().answer(request("```cobol\nDISPLAY 'X'.\n```"), ctx)
    assert ctx.ran == []
    assert "cannot run" in answer.message


async def test_greeting_needs_no_code() -> None:
    answer = await RulesPlanner().answer(request("hello!"), RecordingContext())
    assert not answer.requires_e2b


def test_the_answer_mentions_figures_returned_and_left_out() -> None:
    text = describe(Execution(language="python", code="plt.show()", results=[{"png": "iVBO"}] * 2,
                              results_dropped=1, exit_code=0))
    assert "It drew 2 figures" in text
    assert "1 more figure was left out" in text
    assert "It printed nothing" not in text


async def test_a_message_of_many_blocks_runs_only_the_block_limit_and_says_so() -> None:
    ctx = RecordingContext()
    message = "".join(f"```python\nprint({n})\n```\n" for n in range(1000))
    answer = await RulesPlanner(max_blocks=10).answer(request(message), ctx)
    assert ctx.ran == [("python", f"print({n})\n") for n in range(10)]
    assert "990 more code block(s) were not run: I run at most 10 per message." in answer.message


def test_the_answer_passes_on_the_sandbox_notice() -> None:
    notice = "this conversation's kernel was stopped to make room; this run started in a fresh one"
    text = describe(Execution(language="python", code="print(x)", stdout="", notice=notice))
    assert text.endswith("Note: This conversation's kernel was stopped to make room; this run started in a fresh one.")
    assert "Note:" not in describe(Execution(language="python", code="print(1)", stdout="1\n"))
