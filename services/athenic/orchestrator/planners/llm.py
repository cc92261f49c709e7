"""The ``llm`` planner: an OpenAI-compatible model writes code, runs it through ``run_code``, answers.

The loop is bounded three ways: tool-call rounds (``ATHENIC_LLM_MAX_STEPS``; after the last one
the model is asked once more, with tools off, for its answer), runs per round
(``ATHENIC_LLM_MAX_CALLS_PER_STEP``) and tokens (``ATHENIC_LLM_MAX_TOKENS`` per call,
``ATHENIC_LLM_TOKEN_BUDGET`` per message). A model that will not stop is stopped with an answer
that says so and keeps what ran. Failed calls become ``RetryableError`` or ``TerminalError``
(see ``llm_errors``). The API key is never logged.

Every call streams (``llm_stream``): the answer's text reaches the client as the model writes
it, through ``RunContext.delta``, and what the planner adds itself (a note, a fallback, why it
stopped) is sent the same way, so the deltas always concatenate to the answer's ``message``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import msgspec
import openai
from openai import AsyncOpenAI, omit
from openai.types.chat import (
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCallParam,
    ChatCompletionMessageParam,
    ChatCompletionToolChoiceOptionParam,
)

from athenic.orchestrator.errors import RetryableError
from athenic.orchestrator.planners.base import Answer, Planner, RunContext
from athenic.orchestrator.planners.history import to_messages
from athenic.orchestrator.planners.llm_errors import classify, display_url
from athenic.orchestrator.planners.llm_files import files_prompt
from athenic.orchestrator.planners.llm_stream import AnswerText, Round, ToolCall, read_round
from athenic.orchestrator.planners.llm_tools import (
    RUN_CODE,
    ToolCallError,
    clip,
    parse_run_code,
    run_code_tool,
    tool_result,
)
from athenic.orchestrator.settings import OrchestratorSettings
from athenic.shared.logging import get_logger
from athenic.shared.messages import ChatRequest, Execution

log = get_logger(__name__)

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Servers such as Ollama or vLLM take no key, but the SDK insists on one.
NO_KEY = "unused"

SYSTEM_PROMPT = (
    "You are Athenic, a helpful assistant. When an answer needs computation, data processing or "
    "checking, write a short program and run it with the {tool} tool (languages: {languages}); "
    "print the values you need, read the result, fix and rerun if it fails. Answer directly when "
    "no code is needed. Keep the final answer short and state the result plainly."
)


@dataclass
class _Run:
    """What one message has cost and produced so far."""

    executions: list[Execution] = field(default_factory=list)
    tool_called: bool = False
    steps: int = 0
    tokens: int = 0


class LlmPlanner:
    name = "llm"

    def __init__(self, settings: OrchestratorSettings, *, client: AsyncOpenAI | None = None) -> None:
        self._settings = settings
        self._base_url = settings.openai_base_url or OPENAI_DEFAULT_BASE_URL
        self._client = client or AsyncOpenAI(
            base_url=self._base_url,
            api_key=settings.openai_api_key or NO_KEY,
            timeout=settings.athenic_llm_timeout_seconds,
            max_retries=settings.athenic_llm_max_retries,
        )
        log.info(
            "llm planner ready",
            endpoint=display_url(self._base_url),
            model=settings.athenic_llm_model,
            api_key_set=settings.openai_api_key is not None,
            max_steps=settings.athenic_llm_max_steps,
            token_budget=settings.athenic_llm_token_budget,
        )

    async def aclose(self) -> None:
        await self._client.close()

    def first_run(self, request: ChatRequest, languages: frozenset[str]) -> str | None:
        return None  # the model decides whether and what to run

    async def answer(self, request: ChatRequest, ctx: RunContext) -> Answer:
        await ctx.phase("planning")
        languages = ctx.languages
        # the conversation log is the history: the last turns (two messages each), this one excluded
        earlier = [turn for turn in await ctx.history(self._settings.athenic_history_messages // 2)
                   if turn.request_id != request.request_id]
        system = self._settings.athenic_llm_system_prompt or SYSTEM_PROMPT.format(
            tool=RUN_CODE, languages=", ".join(sorted(languages))
        )
        messages: list[ChatCompletionMessageParam] = [
            # the conversation's files (names and sizes, bounded) follow the instructions
            {"role": "system", "content": f"{system}\n\n{files_prompt(await ctx.files())}"},
            *to_messages(earlier, self._settings.athenic_history_message_chars),
            {"role": "user", "content": request.message},
        ]
        run = _Run()
        answer = AnswerText(ctx.delta)
        await self._loop(messages, ctx, run, answer)
        return Answer(message=answer.text, requires_e2b=run.tool_called or bool(run.executions))

    async def _loop(
        self, messages: list[ChatCompletionMessageParam], ctx: RunContext, run: _Run, answer: AnswerText
    ) -> None:
        """Call the model until it answers; everything the answer says goes through ``answer``."""
        settings = self._settings
        tools = [run_code_tool(ctx.languages)]
        while True:
            remaining = settings.athenic_llm_token_budget - run.tokens
            if remaining <= 0:
                await answer.paragraph(_stopped(run, f"this message used up its token budget ({run.tokens} of "
                                                     "ATHENIC_LLM_TOKEN_BUDGET="
                                                     f"{settings.athenic_llm_token_budget} tokens)"))
                return
            # After the last allowed round the model may still answer, but not call tools.
            last_call = run.steps >= settings.athenic_llm_max_steps
            reply = await self._complete(
                messages, tools, "none" if last_call else "auto",
                min(settings.athenic_llm_max_tokens, remaining), run, answer,
            )
            if not reply.calls:
                if reply.finish_reason == "length":
                    await answer.paragraph("(The answer was cut at the token limit.)")
                elif not answer.round_has_text:
                    await answer.paragraph(_fallback(run))
                return
            if last_call:
                limit = settings.athenic_llm_max_steps
                await answer.paragraph(_stopped(run, "the model kept asking to run code without giving a final "
                                                     f"answer (limit ATHENIC_LLM_MAX_STEPS={limit})"))
                return
            # Text written before the calls ("Let me compute that.") stays in the answer: the
            # client has seen it, and the next round's text follows it as a new paragraph.
            run.steps += 1
            run.tool_called = True
            messages.append(_assistant_turn(reply))
            for index, call in enumerate(reply.calls):
                content = await self._tool_call(call, index, ctx, run)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
                if run.executions and run.executions[-1].cancelled:
                    await answer.paragraph("Cancelled while running code.")
                    return
            await ctx.phase("planning")

    async def _tool_call(self, call: ToolCall, index: int, ctx: RunContext, run: _Run) -> str:
        settings = self._settings
        if index >= settings.athenic_llm_max_calls_per_step:
            return (f"not run: at most {settings.athenic_llm_max_calls_per_step} runs per step; "
                    "run one program at a time")
        try:
            language, code = parse_run_code(call.name, call.arguments, ctx.languages)
        except ToolCallError as exc:
            log.info("llm tool call refused", reason=str(exc))
            return f"not run: {exc}"
        # ``run_code`` publishes "running" itself, once the tenant's quota admits the run.
        execution = await ctx.run_code(language, code)
        run.executions.append(execution)
        return tool_result(execution, settings.athenic_llm_tool_output_chars)

    async def _complete(
        self,
        messages: list[ChatCompletionMessageParam],
        tools: list[ChatCompletionFunctionToolParam],
        tool_choice: ChatCompletionToolChoiceOptionParam,
        max_tokens: int,
        run: _Run,
        answer: AnswerText,
    ) -> Round:
        """One streamed call: its text goes to the client as it comes; the reply put together."""
        settings = self._settings
        started = time.monotonic()
        by_completion_param = settings.athenic_llm_max_tokens_param == "max_completion_tokens"
        where = f"the LLM endpoint {display_url(self._base_url)}"
        try:
            stream = await self._client.chat.completions.create(
                model=settings.athenic_llm_model,
                messages=messages,
                tools=tools,
                tool_choice=tool_choice,
                max_tokens=omit if by_completion_param else max_tokens,
                max_completion_tokens=max_tokens if by_completion_param else omit,
                stream=True,
                # the usage comes in a last chunk; servers that ignore this are estimated below
                stream_options={"include_usage": True},
            )
            async with stream:
                reply = await read_round(stream, answer)
        except openai.OpenAIError as exc:
            error = classify(
                exc, base_url=self._base_url, model=settings.athenic_llm_model,
                timeout=settings.athenic_llm_timeout_seconds, api_key=settings.openai_api_key,
            )
            log.warning("llm call failed", step=run.steps, retryable=isinstance(error, RetryableError),
                        error=str(error))
            raise error from None
        except ValueError as exc:  # a data line that is not JSON, or not a chunk
            log.warning("llm stream unreadable", step=run.steps, error=str(exc)[:300])
            raise RetryableError(f"{where} sent a stream that is not chat completion chunks") from None
        if reply.finish_reason is None:
            raise RetryableError(f"{where} ended its stream before the reply was finished")
        # Without usage figures, count about four characters a token so the budget still binds.
        spent = reply.total_tokens if reply.total_tokens is not None else _estimate_tokens(messages, reply)
        run.tokens += spent
        log.info("llm call", step=run.steps, finish_reason=reply.finish_reason, tokens=spent,
                 usage_sent=reply.total_tokens is not None, tokens_total=run.tokens,
                 ms=round((time.monotonic() - started) * 1000))
        return reply


def make_llm_planner(settings: OrchestratorSettings) -> Planner:
    """The planner the worker uses when ``settings.planner == "llm"``."""
    return LlmPlanner(settings)


def _assistant_turn(reply: Round) -> ChatCompletionMessageParam:
    calls: list[ChatCompletionMessageFunctionToolCallParam] = [
        {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments or "{}"}}
        for call in reply.calls
    ]
    return {"role": "assistant", "content": reply.content or None, "tool_calls": calls}


def _last_output(run: _Run) -> str:
    if not run.executions:
        return ""
    last = run.executions[-1]
    shown = clip((last.stdout or last.stderr).strip(), 1500)
    if last.error is not None:
        shown = f"{last.error.name}: {last.error.value}"
    if not shown:
        return f"\n\nThe last run ({last.language}) printed nothing."
    return f"\n\nThe last run ({last.language}) gave:\n```\n{shown}\n```"


def _stopped(run: _Run, why: str) -> str:
    steps = f"{run.steps} step" + ("" if run.steps == 1 else "s")
    runs = f"{len(run.executions)} code run" + ("" if len(run.executions) == 1 else "s")
    return f"Stopped after {steps}: {why}. {runs} kept.{_last_output(run)}"


def _fallback(run: _Run) -> str:
    return "The model gave an empty answer." + _last_output(run)


def _estimate_tokens(messages: list[ChatCompletionMessageParam], reply: Round) -> int:
    chars = len(msgspec.json.encode(messages)) + len(reply.content) + sum(len(c.arguments) for c in reply.calls)
    return max(1, chars // 4)
