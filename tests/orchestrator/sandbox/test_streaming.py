"""Both backends hand output to the progress events as it is printed, not when the run ends."""

from __future__ import annotations

import time

import pytest

from athenic.orchestrator.sandbox.base import RunSpec, SandboxBackend, Stream

pytestmark = pytest.mark.integration


@pytest.fixture(params=["local_sandbox", "e2b"])
def backend(request: pytest.FixtureRequest) -> SandboxBackend:
    sandbox: SandboxBackend = request.getfixturevalue(request.param)
    return sandbox


async def test_output_streams_while_the_code_runs(backend: SandboxBackend) -> None:
    chunks: list[tuple[float, Stream, str]] = []

    async def sink(stream: Stream, text: str) -> None:
        chunks.append((time.monotonic(), stream, text))

    code = "import sys, time\nprint('first')\nprint('oops', file=sys.stderr)\ntime.sleep(1)\nprint('second')"
    execution = await backend.run(RunSpec(client_id="c1", language="python", code=code, timeout_seconds=10,
                                          memory_mib=256), on_output=sink)
    finished = time.monotonic()
    first = next(at for at, stream, text in chunks if stream == "stdout" and "first" in text)
    assert finished - first >= 0.5, "the first line arrived only when the run ended"
    assert "".join(text for _, stream, text in chunks if stream == "stdout") == "first\nsecond\n"
    assert "".join(text for _, stream, text in chunks if stream == "stderr") == "oops\n"
    assert execution.stdout == "first\nsecond\n"
    assert execution.stderr == "oops\n"
    assert execution.backend == backend.name
    assert execution.error is None
