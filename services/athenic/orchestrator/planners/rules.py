"""The `rules` planner: no external service, in the spirit of the original backend.

It decides ``requiresE2B`` from what the message asks (code, computation, data) and runs the
fenced code blocks of a language the sandbox supports, in order, up to ``max_blocks`` of them
(a message of a thousand blocks must not run a thousand programs), reporting what ran, what
it printed and what it skipped. It cannot write code itself; the `llm` planner does that.
"""

from __future__ import annotations

import re

from athenic.orchestrator.planners.base import Answer, RunContext
from athenic.shared.messages import ChatRequest, Execution

FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
LANGUAGE_ALIASES = {"py": "python", "python3": "python", "sh": "bash", "shell": "bash"}
CODE_INTENT_RE = re.compile(
    r"\b(code|program|script|function|algorithm|python|javascript|execute|run|compute|calculate|"
    r"plot|chart|graph|csv|dataset|factorial|fibonacci|prime|sort|regex|simulate|benchmark)\w*\b",
    re.IGNORECASE,
)
GREETING_RE = re.compile(r"^\s*(hi|hello|hey|howdy|good (morning|afternoon|evening)|greetings)\b", re.IGNORECASE)
PREVIEW_CHARS = 2000


def fenced_blocks(message: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block; an unlabelled block counts as Python."""
    blocks = []
    for match in FENCE_RE.finditer(message):
        language = match.group(1).lower() or "python"
        blocks.append((LANGUAGE_ALIASES.get(language, language), match.group(2)))
    return blocks


def needs_code(message: str) -> bool:
    return bool(fenced_blocks(message)) or bool(CODE_INTENT_RE.search(message))


def _preview(text: str) -> str:
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "\n… (see the execution for the rest)"


# files named in the answer's text (the execution lists them all)
SHOWN_FILES = 5


def _figures(count: int) -> str:
    return "one figure" if count == 1 else f"{count} figures"


def describe(execution: Execution) -> str:
    lines = [f"I ran your {execution.language} code"]
    if execution.timed_out:
        lines[0] += " but it ran out of time and was stopped"
    elif execution.cancelled:
        lines[0] += " but it was cancelled"
    lines[0] += "."
    if execution.stdout:
        lines.append(f"It printed:\n```\n{_preview(execution.stdout.rstrip())}\n```")
    if execution.error is not None:
        lines.append(f"It failed with {execution.error.name}: {execution.error.value}")
    elif execution.stderr:
        lines.append(f"On stderr:\n```\n{_preview(execution.stderr.rstrip())}\n```")
    if execution.truncated:
        lines.append("The output was longer than the limit and was cut.")
    if execution.results:
        lines.append(f"It drew {_figures(len(execution.results))} (attached to this answer).")
    if execution.results_dropped:
        left_out = execution.results_dropped
        lines.append(f"{left_out} more {'figure was' if left_out == 1 else 'figures were'} left out "
                     "(over the sandbox's limit of images per run, or not a PNG).")
    if execution.files:
        shown = ", ".join(f.name for f in execution.files[:SHOWN_FILES])
        more = f" and {len(execution.files) - SHOWN_FILES} more" if len(execution.files) > SHOWN_FILES else ""
        lines.append(f"It made {len(execution.files)} file(s), kept with the conversation's files: {shown}{more}.")
    if execution.files_not_kept:
        shown = "; ".join(execution.files_not_kept[:SHOWN_FILES])
        more = f"; and {len(execution.files_not_kept) - SHOWN_FILES} more" if len(
            execution.files_not_kept) > SHOWN_FILES else ""
        lines.append(f"{len(execution.files_not_kept)} file(s) it made were not kept: {shown}{more}.")
    if not execution.stdout and not execution.stderr and execution.error is None and not execution.results:
        lines.append("It printed nothing.")
    if execution.notice:
        lines.append(f"Note: {execution.notice[0].upper()}{execution.notice[1:]}.")
    return "\n".join(lines)


class RulesPlanner:
    name = "rules"

    def __init__(self, max_blocks: int = 10) -> None:
        self.max_blocks = max_blocks

    def first_run(self, request: ChatRequest, languages: frozenset[str]) -> str | None:
        return next((language for language, _ in fenced_blocks(request.message) if language in languages), None)

    async def answer(self, request: ChatRequest, ctx: RunContext) -> Answer:
        await ctx.phase("planning")
        message = request.message
        blocks = fenced_blocks(message)
        runnable = [(lang, code) for lang, code in blocks if lang in ctx.languages]
        if runnable:
            executions = [await ctx.run_code(lang, code) for lang, code in runnable[:self.max_blocks]]
            skipped = len(blocks) - len(runnable)
            over_limit = len(runnable) - len(executions)
            text = "\n\n".join(describe(e) for e in executions)
            if over_limit:
                text += f"\n\n{over_limit} more code block(s) were not run: I run at most " \
                        f"{self.max_blocks} per message."
            if skipped:
                text += f"\n\n{skipped} block(s) in languages I cannot run here were skipped " \
                        f"(supported: {', '.join(sorted(ctx.languages))})."
            return Answer(message=text, requires_e2b=True)
        if blocks:
            return Answer(
                message="Your message holds code in a language I cannot run here "
                f"(supported: {', '.join(sorted(ctx.languages))}).",
                requires_e2b=True,
            )
        if needs_code(message):
            return Answer(
                message=f"I'll need to execute some code to help with \"{message}\". "
                "Let me set that up for you. (This deployment has no code-writing model configured: "
                "send the code in a fenced ```python block and I will run it.)",
                requires_e2b=True,
            )
        if GREETING_RE.search(message):
            return Answer(message="Hello! Ask me anything, or send code in a ```python block "
                          "and I will run it for you.", requires_e2b=False)
        return Answer(message=f"I received your message: \"{message}\". It doesn't need any code to run.",
                      requires_e2b=False)

    async def aclose(self) -> None:
        return None
