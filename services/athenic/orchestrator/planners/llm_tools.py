"""The one tool the LLM planner offers, ``run_code``: its schema, its arguments, its result.

What goes back to the model is bounded: every output field is cut to a character limit
keeping its head and tail, so one run that prints megabytes cannot blow the context window.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import msgspec
from openai.types.chat import ChatCompletionFunctionToolParam

from athenic.shared.messages import Execution

RUN_CODE = "run_code"


class ToolCallError(ValueError):
    """The model's call cannot run; the message is sent back to it as the tool's result."""


def run_code_tool(languages: Collection[str]) -> ChatCompletionFunctionToolParam:
    return {
        "type": "function",
        "function": {
            "name": RUN_CODE,
            "description": (
                "Run a program in an isolated sandbox and get back what it printed (stdout, stderr), "
                "its exit code and any error. Print every value you need to see. The sandbox has "
                "no network and no user files."
            ),
            "parameters": {
                "type": "object",
                "properties": {
                    "language": {"type": "string", "enum": sorted(languages)},
                    "code": {"type": "string", "description": "The complete program to run."},
                },
                "required": ["language", "code"],
                "additionalProperties": False,
            },
        },
    }


class _RunCodeArgs(msgspec.Struct, frozen=True):
    code: str
    language: str | None = None


def parse_run_code(name: str, arguments: str, languages: Collection[str]) -> tuple[str, str]:
    """The (language, code) of one call, or ``ToolCallError`` saying what is wrong with it."""
    if name != RUN_CODE:
        raise ToolCallError(f"unknown tool {name!r}: the only tool is {RUN_CODE}(language, code)")
    try:
        args = msgspec.json.decode(arguments or "{}", type=_RunCodeArgs)
    except msgspec.DecodeError as exc:
        raise ToolCallError(f"arguments are not a JSON object with a string `code`: {exc}") from None
    if not args.code.strip():
        raise ToolCallError("`code` is empty")
    # A model that forgets the language when only one exists meant that one.
    language = (args.language or (next(iter(languages)) if len(languages) == 1 else "")).strip().lower()
    if language not in languages:
        raise ToolCallError(f"language {args.language!r} is not available; use one of {sorted(languages)}")
    return language, args.code


def clip(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters, keeping its head and tail around a marker."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    omitted = len(text) - head - tail
    return f"{text[:head]}\n[... {omitted} characters omitted ...]\n{text[-tail:]}"


def _result_summary(result: dict[str, Any], limit: int) -> str:
    if isinstance(result.get("text"), str):
        return clip(result["text"], limit)
    return "[" + ", ".join(sorted(result)) + " output]"


def tool_result(execution: Execution, limit: int) -> str:
    """What the model reads back from one run (JSON)."""
    report: dict[str, Any] = {
        "exit_code": execution.exit_code,
        "stdout": clip(execution.stdout, limit),
        "stderr": clip(execution.stderr, limit),
    }
    if execution.results:
        report["results"] = [_result_summary(result, limit) for result in execution.results[:8]]
    if execution.error is not None:
        report["error"] = {
            "name": execution.error.name,
            "value": clip(execution.error.value, limit),
            "traceback": clip(execution.error.traceback, limit),
        }
    if execution.timed_out:
        report["timed_out"] = True
    if execution.truncated:
        report["truncated"] = "the sandbox cut the output at its size limit"
    if execution.results_dropped:
        report["results_dropped"] = (f"{execution.results_dropped} figure(s) left out: over the sandbox's "
                                     "limit of images per run")
    if execution.files:
        report["files_kept"] = [f"{f.name} ({f.size} bytes)" for f in execution.files[:16]]
    if execution.files_not_kept:
        report["files_not_kept"] = [clip(item, 200) for item in execution.files_not_kept[:16]]
    if execution.cancelled:
        report["cancelled"] = True
    if execution.notice:
        report["notice"] = execution.notice  # e.g. the kernel was replaced: earlier variables are gone
    return msgspec.json.encode(report).decode()
