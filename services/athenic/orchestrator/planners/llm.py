"""The ``llm`` planner: an OpenAI-compatible model writes code, runs it through ``run_code``, answers.

The loop is bounded three ways: tool-call rounds (``ATHENIC_LLM_MAX_STEPS``; after the last one
the model is asked once more, with tools off, for its answer), runs per round
(``ATHENIC_LLM_MAX_CALLS_PER_STEP``) and tokens (``ATHENIC_LLM_MAX_TOKENS`` per call,
``ATHENIC_LLM_TOKEN_BUDGET`` per message). A model that will not stop is stopped with an answer
that says so and keeps what ran. Failed calls become ``RetryableError`` or ``TerminalError``
(see ``llm_errors``). The API key is never logged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import msgspec
import openai
from openai import AsyncOpenAI, omit
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionMessage,
    ChatCompletionMessageFunctionToolCallParam,
    ChatCompletionMessageParam,
    ChatCompletionMessageToolCallUnion,
    ChatCompletionToolChoiceOptionParam,
)

from athenic.orchestrator.errors import RetryableError
from athenic.orchestrator.planners.base import Answer, Planner, RunContext
from athenic.orchestrator.planners.history import to_messages
from athenic.orchestrator.planners.llm_errors import classify, display_url
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
            {"role": "system", "content": system},
            *to_messages(earlier, self._settings.athenic_history_message_chars),
            {"role": "user", "content": request.message},
        ]
        run = _Run()
        text = await self._loop(messages, ctx, run)
        return Answer(message=text, requires_e2b=run.tool_called or bool(run.executions))

    async def _loop(self, messages: list[ChatCompletionMessageParam], ctx: RunContext, run: _Run) -> str:
        settings = self._settings
        tools = [run_code_tool(ctx.languages)]
        while True:
            remaining = settings.athenic_llm_token_budget - run.tokens
            if remaining <= 0:
                return _stopped(run, f"this message used up its token budget ({run.tokens} of "
                                     f"ATHENIC_LLM_TOKEN_BUDGET={settings.athenic_llm_token_budget} tokens)")
            # After the last allowed round the model may still answer, but not call tools.
            last_call = run.steps >= settings.athenic_llm_max_steps
            completion = await self._complete(
                messages, tools, "none" if last_call else "auto",
                min(settings.athenic_llm_max_tokens, remaining), run,
            )
            choice = completion.choices[0]
            message = choice.message
            calls = message.tool_calls or []
            if not calls:
                text = (message.content or message.refusal or "").strip()
                if choice.finish_reason == "length":
                    text += "\n\n(The answer was cut at the token limit.)"
                return text.strip() or _fallback(run)
            if last_call:
                return _stopped(run, f"the model kept asking to run code without giving a final answer "
                                     f"(limit ATHENIC_LLM_MAX_STEPS={settings.athenic_llm_max_steps})")
            run.steps += 1
            run.tool_called = True
            messages.append(_assistant_turn(message))
            for index, call in enumerate(calls):
                content = await self._tool_call(call, index, ctx, run)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
                if run.executions and run.executions[-1].cancelled:
                    return "Cancelled while running code."
            await ctx.phase("planning")

    async def _tool_call(
        self, call: ChatCompletionMessageToolCallUnion, index: int, ctx: RunContext, run: _Run
    ) -> str:
        settings = self._settings
        function = getattr(call, "function", None)
        if index >= settings.athenic_llm_max_calls_per_step:
            return (f"not run: at most {settings.athenic_llm_max_calls_per_step} runs per step; "
                    "run one program at a time")
        try:
            if function is None:
                raise ToolCallError(f"only function tools exist; call {RUN_CODE}(language, code)")
            language, code = parse_run_code(function.name, function.arguments, ctx.languages)
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
        tools: list[openai.types.chat.ChatCompletionFunctionToolParam],
        tool_choice: ChatCompletionToolChoiceOptionParam,
        max_tokens: int,
        run: _Run,
    ) -> ChatCompletion:
        settings = self._settings
        started = time.monotonic()
        by_completion_param = settings.athenic_llm_max_tokens_param == "max_completion_tokens"
        try:
            completion = await self._client.chat.completions.create(
                model=settings.athenic_llm_model,
                messages=messages,
                tools=tools,
                tool_choice=tool_choice,
                max_tokens=omit if by_completion_param else max_tokens,
                max_completion_tokens=max_tokens if by_completion_param else omit,
            )
        except openai.OpenAIError as exc:
            error = classify(
                exc, base_url=self._base_url, model=settings.athenic_llm_model,
                timeout=settings.athenic_llm_timeout_seconds, api_key=settings.openai_api_key,
            )
            log.warning("llm call failed", step=run.steps, retryable=isinstance(error, RetryableError),
                        error=str(error))
            raise error from None
        if not completion.choices:
            raise RetryableError(f"the LLM endpoint {display_url(self._base_url)} returned no choices")
        usage = completion.usage
        # Without usage figures, count about four characters a token so the budget still binds.
        spent = usage.total_tokens if usage else _estimate_tokens(messages, completion.choices[0].message)
        run.tokens += spent
        log.info("llm call", step=run.steps, finish_reason=completion.choices[0].finish_reason,
                 tokens=spent, tokens_total=run.tokens, ms=round((time.monotonic() - started) * 1000))
        return completion


def make_llm_planner(settings: OrchestratorSettings) -> Planner:
    """The planner the worker uses when ``settings.planner == "llm"``."""
    return LlmPlanner(settings)


def _assistant_turn(message: ChatCompletionMessage) -> ChatCompletionMessageParam:
    calls: list[ChatCompletionMessageFunctionToolCallParam] = []
    for call in message.tool_calls or []:
        function = getattr(call, "function", None)
        calls.append({
            "id": call.id,
            "type": "function",
            "function": {
                "name": function.name if function else RUN_CODE,
                "arguments": function.arguments if function else "{}",
            },
        })
    return {"role": "assistant", "content": message.content, "tool_calls": calls}


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


def _estimate_tokens(messages: list[ChatCompletionMessageParam], reply: ChatCompletionMessage) -> int:
    chars = len(msgspec.json.encode(messages)) + len(reply.content or "")
    return max(1, chars // 4)
