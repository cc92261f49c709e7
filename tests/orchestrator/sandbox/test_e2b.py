"""The E2B backend through the real SDK, against the stand-in of E2B's endpoints on loopback."""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from collections.abc import Callable

import pytest
import structlog

from athenic.orchestrator.errors import RetryableError, TerminalError
from athenic.orchestrator.record_budget import fit_response
from athenic.orchestrator.records import Outcome, final_response, stored_size
from athenic.orchestrator.sandbox.base import RunSpec, Stream
from athenic.orchestrator.sandbox.e2b import E2BSandbox
from athenic.shared.broker import Broker
from athenic.shared.messages import ChatRequest
from tests.orchestrator.sandbox.backends import OUTPUT_LIMIT, e2b_backend
from tests.support.e2b_standin import E2BStandIn, png_bytes

pytestmark = pytest.mark.integration


async def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    """Poll ``condition`` until it holds (generous: the machine is shared)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def spec(code: str, *, client: str = "c1", timeout: float = 10, idle: int = 300, template: str | None = None,
         internet: bool = False) -> RunSpec:
    return RunSpec(client_id=client, language="python", code=code, timeout_seconds=timeout, idle_seconds=idle,
                   template=template, allow_internet=internet)


async def test_rich_results_come_back_by_format(e2b: E2BSandbox) -> None:
    code = (
        "import base64\n"
        f"PNG = base64.b64decode({base64.b64encode(png_bytes()).decode()!r})\n"
        "class Chart:\n"
        "    def _repr_png_(self):\n"
        "        return PNG\n"
        "    def __repr__(self):\n"
        "        return '<Chart>'\n"
        "class Table:\n"
        "    def _repr_json_(self):\n"
        "        return {'rows': [1, 2]}\n"
        "    def _repr_html_(self):\n"
        "        return '<table></table>'\n"
        "display(Table())\n"
        "Chart()\n"
    )
    execution = await e2b.run(spec(code))
    assert execution.error is None
    table, chart = execution.results
    assert table["json"] == {"rows": [1, 2]}
    assert table["html"] == "<table></table>"
    assert chart["text"] == "<Chart>"
    assert base64.b64decode(chart["png"]) == png_bytes()


async def test_an_error_in_the_code_is_part_of_the_answer(e2b: E2BSandbox, standin: E2BStandIn) -> None:
    execution = await e2b.run(spec("print('before')\n{}['missing']"))
    assert execution.stdout == "before\n"
    assert execution.error is not None
    assert execution.error.name == "KeyError"
    assert execution.error.value == "'missing'"
    assert "Traceback" in execution.error.traceback
    assert "\x1b[" not in execution.error.traceback, "terminal colours are stripped"
    # the same sandbox keeps serving
    assert (await e2b.run(spec("print(2)"))).stdout == "2\n"
    assert len(standin.creates) == 1


async def test_one_sandbox_per_client_reused_with_its_state(e2b: E2BSandbox, standin: E2BStandIn) -> None:
    await e2b.run(spec("x = 41", client="alice"))
    again = await e2b.run(spec("x + 1", client="alice"))
    assert again.results == [{"text": "42"}]
    other = await e2b.run(spec("print('x' in dir())", client="bob"))
    assert other.stdout == "False\n"
    assert [sandbox.metadata["clientId"] for sandbox in standin.creates] == ["alice", "bob"]
    assert all(sandbox.api_key == "e2b_test_key" for sandbox in standin.creates)
    assert standin.creates[0].executions == 2
    assert e2b.sessions == 2


async def test_template_and_internet_access_follow_the_run(e2b: E2BSandbox, standin: E2BStandIn) -> None:
    await e2b.run(spec("1", client="a"))
    await e2b.run(spec("1", client="b", template="data-science", internet=True))
    default, custom = standin.creates
    assert default.template == "code-interpreter-v1"
    assert default.allow_internet is False
    assert custom.template == "data-science"
    assert custom.allow_internet is True
    # a changed policy replaces the client's sandbox
    await e2b.run(spec("1", client="a", template="data-science"))
    assert standin.creates[2].template == "data-science"
    assert default.sandbox_id in standin.kills


async def test_an_idle_sandbox_is_paused_and_the_next_run_resumes_it_with_its_state(
    e2b: E2BSandbox, standin: E2BStandIn
) -> None:
    await e2b.run(spec("x = 41", idle=1))
    first = standin.creates[0]
    await wait_until(lambda: first.state == "paused")
    assert standin.pauses == [first.sandbox_id]
    assert standin.kills == []
    assert e2b.sessions == 0
    execution = await e2b.run(spec("x + 1", idle=1))
    assert execution.results == [{"text": "42"}]
    assert standin.resumes == [first.sandbox_id]
    assert len(standin.creates) == 1


async def test_a_used_sandbox_is_not_reaped_and_its_lifetime_is_refreshed(
    e2b: E2BSandbox, standin: E2BStandIn
) -> None:
    for _ in range(4):
        await e2b.run(spec("print(1)", idle=1))
        await asyncio.sleep(0.5)
    assert standin.kills == []
    assert len(standin.creates) == 1
    assert len(standin.creates[0].lifetimes) == 3


async def test_shutdown_pauses_every_sandbox_and_kills_none(e2b: E2BSandbox, standin: E2BStandIn) -> None:
    await e2b.run(spec("1", client="a"))
    await e2b.run(spec("1", client="b"))
    await e2b.aclose()
    assert sorted(standin.pauses) == sorted(sandbox.sandbox_id for sandbox in standin.creates)
    assert standin.kills == []
    assert standin.running == [], "nothing is left billing compute"
    with pytest.raises(RetryableError):
        await e2b.run(spec("1"))


async def test_a_sandbox_gone_behind_our_back_is_replaced(e2b: E2BSandbox, standin: E2BStandIn) -> None:
    await e2b.run(spec("x = 1"))
    standin.creates[0].killed = True  # E2B's own lifetime ran out
    execution = await e2b.run(spec("print('fresh')"))
    assert execution.stdout == "fresh\n"
    assert len(standin.creates) == 2


async def test_code_over_the_time_limit_is_interrupted_and_the_kernel_survives(
    e2b: E2BSandbox, standin: E2BStandIn
) -> None:
    await e2b.run(spec("kept = 'state'"))
    execution = await e2b.run(spec("import time\nprint('working')\ntime.sleep(30)", timeout=1))
    assert execution.timed_out
    assert execution.stdout == "working\n"
    assert execution.error is not None
    assert execution.error.name == "TimeoutError"
    after = await e2b.run(spec("kept"))
    assert after.results == [{"text": "'state'"}]
    assert len(standin.creates[0].interrupted_at) == 1


async def test_a_hanging_service_times_out(e2b: E2BSandbox, standin: E2BStandIn) -> None:
    await e2b.run(spec("1"))
    standin.execute_mode = "hang"
    execution = await e2b.run(spec("print(1)", timeout=1))
    assert execution.timed_out
    assert execution.error is not None
    assert execution.error.name == "TimeoutError"


async def test_cancelling_stops_the_remote_execution_within_a_second(e2b: E2BSandbox, standin: E2BStandIn) -> None:
    started = asyncio.Event()

    async def sink(stream: Stream, text: str) -> None:
        started.set()

    task = asyncio.create_task(e2b.run(spec("import time\nprint('go')\ntime.sleep(60)", timeout=60), sink))
    await asyncio.wait_for(started.wait(), 10)
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - cancelled_at < 1.0
    sandbox = standin.creates[0]
    deadline = cancelled_at + 1.0
    while not sandbox.interrupted_at and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert sandbox.interrupted_at, "the stand-in's execution should have been interrupted"
    assert sandbox.interrupted_at[0] - cancelled_at < 1.0
    # the client's kernel serves the next message
    assert (await e2b.run(spec("print('next')"))).stdout == "next\n"


async def test_a_dropped_connection_is_retryable(e2b: E2BSandbox, standin: E2BStandIn) -> None:
    await e2b.run(spec("1"))
    standin.execute_mode = "drop"
    with pytest.raises(RetryableError):
        await e2b.run(spec("print(1)"))


@pytest.mark.parametrize("where", ["execute", "create"])
async def test_server_errors_are_retryable(e2b: E2BSandbox, standin: E2BStandIn, where: str) -> None:
    if where == "execute":
        await e2b.run(spec("1"))
        standin.execute_status = 500
    else:
        standin.create_status = 500
    with pytest.raises(RetryableError):
        await e2b.run(spec("print(1)"))


async def test_a_request_the_code_interpreter_refuses_is_terminal(e2b: E2BSandbox, standin: E2BStandIn) -> None:
    await e2b.run(spec("1"))
    standin.execute_status = 400
    with pytest.raises(TerminalError, match="400"):
        await e2b.run(spec("print(1)"))


async def test_an_unknown_language_is_answered_without_calling_e2b(e2b: E2BSandbox, standin: E2BStandIn) -> None:
    execution = await e2b.run(RunSpec(client_id="c1", language="cobol", code="DISPLAY 1"))
    assert execution.error is not None
    assert execution.error.name == "UnsupportedLanguage"
    assert standin.create_attempts == 0


async def test_rate_limiting_is_retryable(e2b: E2BSandbox, standin: E2BStandIn) -> None:
    standin.create_status = 429
    with pytest.raises(RetryableError, match="busy"):
        await e2b.run(spec("print(1)"))


async def test_a_bad_key_fails_clearly_with_one_error_log(standin: E2BStandIn, broker: Broker) -> None:
    backend = e2b_backend(broker, api_key="wrong")
    try:
        with structlog.testing.capture_logs() as logs, pytest.raises(TerminalError, match="E2B_API_KEY"):
            await backend.run(spec("print(1)"))
    finally:
        await backend.aclose()
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert len(errors) == 1
    assert standin.create_attempts == 1, "a rejected key is not retried"
    assert standin.creates == []


async def test_e2b_unreachable_is_retryable(monkeypatch: pytest.MonkeyPatch, broker: Broker) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    monkeypatch.setenv("E2B_API_URL", url)
    monkeypatch.setenv("E2B_SANDBOX_URL", url)
    backend = e2b_backend(broker, api_key="k", request_timeout=2)
    try:
        with pytest.raises(RetryableError, match="unreachable"):
            await backend.run(spec("print(1)"))
    finally:
        await backend.aclose()


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
async def test_a_run_printing_forever_is_stopped_at_the_output_cap(
    e2b: E2BSandbox, standin: E2BStandIn, stream: str
) -> None:
    await e2b.run(spec("kept = 'state'"))
    started = time.monotonic()
    code = f"import sys\nprint('first')\nwhile True:\n    print('x' * 100, file=sys.{stream})"
    execution = await e2b.run(spec(code, timeout=60))
    # stopped by the cap, long before the time limit
    assert time.monotonic() - started < 20
    assert not execution.timed_out
    assert execution.truncated
    assert execution.error is not None and execution.error.name == "OutputLimitExceeded"
    captured = execution.stdout if stream == "stdout" else execution.stderr
    assert "bytes of output omitted (output limit reached)" in captured
    assert len(captured.encode()) < OUTPUT_LIMIT + 200
    # the remote execution was interrupted, and the client's kernel serves the next message
    sandbox = standin.creates[0]
    deadline = time.monotonic() + 5
    while not sandbox.interrupted_at and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert sandbox.interrupted_at, "the stand-in's execution should have been interrupted"
    assert (await e2b.run(spec("kept"))).results == [{"text": "'state'"}]


async def test_thirty_images_then_endless_output_keep_their_results_and_fit_the_record(e2b: E2BSandbox) -> None:
    code = (
        "import base64, os\n"
        "class Figure:\n"
        "    def __init__(self, n):\n"
        "        self.n = n\n"
        "    def _repr_png_(self):\n"
        "        return os.urandom(30_000)\n"
        "    def __repr__(self):\n"
        "        return f'<Figure {self.n}>'\n"
        "for n in range(30):\n"
        "    display(Figure(n))\n"
        "while True:\n"
        "    print('y' * 1000)\n"
    )
    execution = await e2b.run(spec(code, timeout=60))
    assert execution.truncated and execution.error is not None
    assert execution.error.name == "OutputLimitExceeded"
    # the results that came before the cap stopped the run are kept
    assert [result["text"] for result in execution.results] == [f"<Figure {n}>" for n in range(30)]
    request = ChatRequest(request_id="r", client_id="c1", message="draw", submitted_at="2026-01-01T00:00:00.000Z")
    response = final_response(request, Outcome("completed", message="ran"), [execution])
    budget = 128 * 1024
    fitted = fit_response(response, lambda candidate: stored_size(request, 1, candidate), budget)
    assert stored_size(request, 1, fitted) <= budget
    [kept] = fitted.executions
    inline = [result for result in kept.results if "png" in result]
    assert 0 < len(inline) < 30 and kept.results_dropped == 30 - len(inline)
    assert kept.dropped is not None and "left out (png" in kept.dropped
