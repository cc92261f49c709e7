"""Fitting an answer to the response record's byte budget, before it is written.

NATS refuses a message over its ``max_payload`` (1 MiB by default), and a refused record is an
answer the app never gets. So the final ``ChatResponse`` is cut until the record it goes into
(and the logged turn, which holds the same response) encodes to at most the budget:

1. texts (stdout, stderr, text results, tracebacks, code, the answer's text) are trimmed to one
   common length, head and tail kept around the omitted marker of a run's own output cap, only
   as far as needed for everything but the droppable results to fit;
2. droppable results (structured values, file references, any file format a result still
   carries) are then put back in order while they fit; the rest are left out and counted in
   ``resultsDropped``.

Each execution says what it lost (``dropped``, ``truncated``), and so does the answer (its text
ends with a note; ``truncated`` and ``dropped``).

Files never reach this point as bytes: a run's images and other file results (png, jpeg, svg,
pdf) and what it left in ``files/out/`` are stored in the conversation's Object Store before the
answer is assembled (``conversation_files.py``), and results carry references to them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from athenic.orchestrator.sandbox.output import head_and_tail
from athenic.shared.messages import ChatResponse, Execution, ExecutionError, encode

# Result formats that are files, not text: never trimmed, kept whole or left out.
FILE_FORMATS = frozenset({"png", "jpeg", "svg", "pdf"})
# Text formats whose head and tail still mean something when cut.
TEXT_FORMATS = frozenset({"text", "markdown", "latex", "html", "javascript"})
# No text is cut below this (the marker alone is ~60 bytes).
MIN_TEXT_BYTES = 256
# Rounds of "cut, add the notes, measure again" before giving up on exactness.
FIT_ROUNDS = 4

Size = Callable[[ChatResponse], int]


def kib(count: int) -> str:
    return f"{count / 1024:.1f} KiB" if count < 1024 * 1024 else f"{count / (1024 * 1024):.1f} MiB"


def fit_response(response: ChatResponse, size: Size, budget: int) -> ChatResponse:
    """``response`` cut so that ``size(response) <= budget`` where that is possible at all.

    ``size`` measures the record the response goes into (its bytes as written to NATS); the
    caller checks the result, since a record whose other fields alone exceed the budget cannot
    be fitted.
    """
    if size(response) <= budget:
        return response
    target = budget
    fitted = response
    for _ in range(FIT_ROUNDS):
        fitted = _cut(response, size, target, budget)
        over = size(fitted) - budget
        if over <= 0:
            return fitted
        target -= over  # the notes took room the cut did not count: cut deeper
    return fitted


def _cut(response: ChatResponse, size: Size, target: int, budget: int) -> ChatResponse:
    bare = _without_droppables(response)
    if size(bare) > target:
        bare = _trim_texts(bare, _largest_cap(bare, size, target))
    # Put the droppable results back, in order, while they fit. Replacing one item of a JSON
    # list changes the record by exactly the difference of the two items' encodings.
    current, current_size = bare, size(bare)
    for e_index, execution in enumerate(response.executions):
        bases = {r["_slot"]: r for r in bare.executions[e_index].results}
        for result in execution.results:
            droppable = _droppable_part(result)
            if not droppable:
                continue
            base = bases[id(result)]
            merged = {**base, **droppable}
            grown = current_size + len(encode(merged)) - len(encode(base))
            if grown <= target:
                current, current_size = _with_result(current, e_index, id(result), merged), grown
    return _annotate(response, current, budget)


def _droppable_part(result: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in result.items() if not _trimmable(name, value)}


def _trimmable(name: str, value: Any) -> bool:
    return name in TEXT_FORMATS and isinstance(value, str)


def _without_droppables(response: ChatResponse) -> ChatResponse:
    """Every result reduced to its trimmable formats, tagged with the original's identity."""
    executions = []
    for execution in response.executions:
        results = [{**{k: v for k, v in r.items() if _trimmable(k, v)}, "_slot": id(r)} for r in execution.results]
        executions.append(msgspec.structs.replace(execution, results=results))
    return msgspec.structs.replace(response, executions=executions)


def _with_result(response: ChatResponse, e_index: int, slot: int, merged: dict[str, Any]) -> ChatResponse:
    executions = list(response.executions)
    execution = executions[e_index]
    results = [merged if r.get("_slot") == slot else r for r in execution.results]
    executions[e_index] = msgspec.structs.replace(execution, results=results)
    return msgspec.structs.replace(response, executions=executions)


def _texts_max(response: ChatResponse) -> int:
    longest = len(response.message.encode())
    for execution in response.executions:
        fields = [execution.code, execution.stdout, execution.stderr]
        if execution.error is not None:
            fields += [execution.error.value, execution.error.traceback]
        fields += [v for r in execution.results for k, v in r.items() if _trimmable(k, v)]
        longest = max([longest, *(len(text.encode()) for text in fields)])
    return longest


def _largest_cap(response: ChatResponse, size: Size, target: int) -> int:
    """The longest common text length at which ``response`` fits (bisection; size grows with it)."""
    low, high = MIN_TEXT_BYTES, max(_texts_max(response), MIN_TEXT_BYTES)
    if size(_trim_texts(response, low)) > target:
        return low
    while low < high:
        middle = (low + high + 1) // 2
        if size(_trim_texts(response, middle)) <= target:
            low = middle
        else:
            high = middle - 1
    return low


def _trim(text: str, cap: int) -> str:
    return head_and_tail(text, cap)[0]


def _trim_texts(response: ChatResponse, cap: int) -> ChatResponse:
    executions = []
    for execution in response.executions:
        error = execution.error
        if error is not None:
            error = ExecutionError(name=error.name, value=_trim(error.value, cap),
                                   traceback=_trim(error.traceback, cap))
        results = [{k: (_trim(v, cap) if _trimmable(k, v) else v) for k, v in r.items()} for r in execution.results]
        executions.append(msgspec.structs.replace(
            execution, code=_trim(execution.code, cap), stdout=_trim(execution.stdout, cap),
            stderr=_trim(execution.stderr, cap), error=error, results=results))
    return msgspec.structs.replace(response, message=_trim(response.message, cap), executions=executions)


def _field_cuts(original: Execution, fitted: Execution) -> list[str]:
    cuts = []
    for name in ("code", "stdout", "stderr"):
        before, after = getattr(original, name), getattr(fitted, name)
        if before != after:
            cuts.append(f"{name} cut to {kib(len(after.encode()))} of {kib(len(before.encode()))}")
    if original.error is not None and fitted.error is not None and original.error != fitted.error:
        cuts.append("the error's traceback cut")
    return cuts


def _annotate(original: ChatResponse, fitted: ChatResponse, budget: int) -> ChatResponse:
    """Drop the working tags and say, per execution and for the answer, what was cut."""
    executions = []
    summary: list[str] = []
    for index, (before, after) in enumerate(zip(original.executions, fitted.executions, strict=True)):
        by_slot = {r["_slot"]: {k: v for k, v in r.items() if k != "_slot"} for r in after.results}
        results, left_out, text_cut = [], [], False
        for result in before.results:
            kept = by_slot[id(result)]
            if _droppable_part(result) and not _droppable_part(kept):
                left_out.append(result)
            text_cut = text_cut or any(kept.get(k) != v for k, v in result.items() if _trimmable(k, v))
            if kept:  # a file without a text form, left out, is no result at all
                results.append(kept)
        cuts = _field_cuts(before, after)
        if text_cut:
            cuts.append("text results cut")
        if left_out:
            formats = sorted({name for r in left_out for name in _droppable_part(r)})
            dropped_bytes = sum(len(encode(_droppable_part(r))) for r in left_out)
            cuts.append(f"{len(left_out)} result(s) left out ({', '.join(formats)}; {kib(dropped_bytes)})")
        if not cuts:
            executions.append(msgspec.structs.replace(after, results=results))
            continue
        summary.append(f"run {index + 1}: " + "; ".join(cuts))
        output_cut = any(cut.startswith(("stdout", "stderr")) for cut in cuts)
        executions.append(msgspec.structs.replace(
            after, results=results, dropped="; ".join(cuts) + f": over the record's {kib(budget)} budget",
            truncated=before.truncated or output_cut, results_dropped=before.results_dropped + len(left_out)))
    if original.message != fitted.message:
        summary.insert(0, f"the answer's text cut to {kib(len(fitted.message.encode()))}")
    described = "; ".join(summary) or "cut to fit"
    note = (f"\n\n(This answer was larger than the {kib(budget)} a stored answer may take, so part of it "
            f"was left out: {described}.)")
    return msgspec.structs.replace(fitted, executions=executions, message=fitted.message + note,
                                   truncated=True, dropped=described)
