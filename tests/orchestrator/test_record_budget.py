"""Fitting an answer to the record budget: what is kept, what is cut, and how it says so."""

from __future__ import annotations

import base64
import os
import time

import pytest

from athenic.orchestrator.record_budget import fit_response
from athenic.orchestrator.records import Outcome, final_response, stored_size
from athenic.shared.messages import ChatRequest, ChatResponse, Execution, encode

pytestmark = pytest.mark.unit

REQUEST = ChatRequest(request_id="r", client_id="c", message="plot", submitted_at="2026-01-01T00:00:00.000Z")


def size(response: ChatResponse) -> int:
    return stored_size(REQUEST, 1, response)


def image(n: int) -> dict[str, str]:
    return {"png": base64.b64encode(os.urandom(20_000)).decode(), "text": f"<Figure {n}>"}


def answer(executions: list[Execution]) -> ChatResponse:
    return final_response(REQUEST, Outcome("completed", message="I ran your code."), executions)


def test_an_answer_within_the_budget_is_left_alone() -> None:
    response = answer([Execution(language="python", code="print(1)", stdout="1\n", results=[image(1)])])
    assert fit_response(response, size, 64 * 1024) is response


def test_large_output_and_many_images_fit_and_say_what_was_cut() -> None:
    head, tail = "HEAD" + "a" * 60_000, "b" * 4000 + "TAIL"
    executions = [Execution(language="python", code="print()", stdout=head + tail, stderr="warning\n",
                            results=[image(n) for n in range(30)], results_dropped=2)
                  for _ in range(3)]
    response = answer(executions)
    budget = 64 * 1024
    fitted = fit_response(response, size, budget)
    assert size(fitted) <= budget
    assert fitted.truncated and fitted.dropped
    assert "part of it was left out" in fitted.message
    for execution in fitted.executions:
        # head and tail kept around the marker; the small stderr untouched
        assert execution.stdout.startswith("HEAD") and execution.stdout.endswith("TAIL")
        assert "bytes of output omitted" in execution.stdout
        assert execution.stderr == "warning\n"
        assert execution.truncated
        assert execution.dropped is not None and "left out (png" in execution.dropped
        kept_images = [r for r in execution.results if "png" in r]
        # the sandbox's own count plus the images the budget left out
        assert execution.results_dropped == 2 + 30 - len(kept_images)
        # a left-out image keeps its text form: the app still says what it was
        assert len(execution.results) == 30
    assert "_slot" not in encode(fitted).decode()


def test_a_structured_result_that_does_not_fit_is_left_out_whole() -> None:
    table = {"json": {"rows": list(range(50_000))}, "text": "<Table>"}
    fitted = fit_response(answer([Execution(language="python", code="t", results=[table])]), size, 16 * 1024)
    assert size(fitted) <= 16 * 1024
    [execution] = fitted.executions
    assert execution.results == [{"text": "<Table>"}]
    assert execution.results_dropped == 1
    assert execution.dropped is not None and "(json;" in execution.dropped


def test_a_long_answer_text_is_cut_too() -> None:
    response = final_response(REQUEST, Outcome("completed", message="word " * 50_000), [])
    fitted = fit_response(response, size, 16 * 1024)
    assert size(fitted) <= 16 * 1024
    assert fitted.message.startswith("word word")
    assert "the answer's text cut to" in (fitted.dropped or "")


def test_thousands_of_results_are_fitted_in_one_pass() -> None:
    # E2B hands back every display(): the fitting must not re-measure the record per result
    results = [{"png": base64.b64encode(os.urandom(7_500)).decode(), "text": f"<Figure {n}>"} for n in range(2000)]
    response = answer([Execution(language="python", code="show()", results=results)])
    started = time.monotonic()
    fitted = fit_response(response, size, 256 * 1024)
    assert time.monotonic() - started < 5
    assert size(fitted) <= 256 * 1024
    [execution] = fitted.executions
    inline = sum("png" in r for r in execution.results)
    assert 0 < inline < 100
    assert execution.results_dropped == 2000 - inline
