"""The local backend runs code for real: a process per run, confined, streamed, bounded."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import structlog

from athenic.orchestrator.errors import TerminalError
from athenic.orchestrator.sandbox.base import RunSpec, Stream
from athenic.orchestrator.sandbox.local import LocalSandbox
from tests.orchestrator.sandbox.backends import OUTPUT_LIMIT, sandbox_processes, wait_until_no_sandbox_processes

pytestmark = pytest.mark.integration


def spec(code: str, *, timeout: float = 10, language: str = "python", memory_mib: int = 256) -> RunSpec:
    return RunSpec(client_id="c1", language=language, code=code, timeout_seconds=timeout, memory_mib=memory_mib)


async def test_runs_python_and_reports_the_result(local_sandbox: LocalSandbox) -> None:
    execution = await local_sandbox.run(spec("import sys\nprint(6 * 7)\nprint('warn', file=sys.stderr)"))
    assert execution.stdout == "42\n"
    assert execution.stderr == "warn\n"
    assert execution.exit_code == 0
    assert execution.error is None
    assert not execution.timed_out
    assert not execution.truncated
    assert execution.backend == "local"
    assert execution.duration_ms > 0


async def test_an_exception_becomes_the_error_with_its_traceback(local_sandbox: LocalSandbox) -> None:
    execution = await local_sandbox.run(spec("print('before')\nvalues = {}\nvalues['missing']"))
    assert execution.stdout == "before\n"
    assert execution.exit_code == 1
    assert execution.error is not None
    assert execution.error.name == "KeyError"
    assert execution.error.value == "'missing'"
    assert "line 3" in execution.error.traceback
    assert "values['missing']" in execution.error.traceback


async def test_a_syntax_error_is_reported_as_such(local_sandbox: LocalSandbox) -> None:
    execution = await local_sandbox.run(spec("print('never'"))
    assert execution.stdout == ""
    assert execution.error is not None
    assert execution.error.name == "SyntaxError"


async def test_a_plain_non_zero_exit_is_explained(local_sandbox: LocalSandbox) -> None:
    execution = await local_sandbox.run(spec("import sys\nsys.exit(3)"))
    assert execution.exit_code == 3
    assert execution.error is not None
    assert "status 3" in execution.error.value


async def test_a_timeout_keeps_what_was_printed_before_it(local_sandbox: LocalSandbox) -> None:
    execution = await local_sandbox.run(spec("import time\nprint('working')\ntime.sleep(30)", timeout=1))
    assert execution.timed_out
    assert execution.stdout == "working\n"
    assert execution.error is not None
    assert execution.error.name == "TimeoutError"
    assert "1 s" in execution.error.value
    assert execution.duration_ms < 10_000


async def test_cancelling_the_run_kills_the_process_at_once(local_sandbox: LocalSandbox) -> None:
    started = asyncio.Event()

    async def sink(stream: Stream, text: str) -> None:
        started.set()

    task = asyncio.create_task(local_sandbox.run(spec("import time\nprint('go')\ntime.sleep(60)", timeout=60), sink))
    await asyncio.wait_for(started.wait(), 10)
    assert sandbox_processes(local_sandbox), "the run's processes should be visible while it runs"
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - cancelled_at < 1.0
    assert await wait_until_no_sandbox_processes(local_sandbox, cancelled_at + 1.0) == []


async def test_output_over_the_limit_is_cut_with_a_marker_and_keeps_the_end(local_sandbox: LocalSandbox) -> None:
    code = "for i in range(20000):\n    print(f'line {i}')\nraise RuntimeError('the end')"
    execution = await local_sandbox.run(spec(code))
    assert execution.truncated
    assert execution.stdout.startswith("line 0\nline 1\n")
    assert "bytes of output omitted (output limit reached)" in execution.stdout
    assert execution.stdout.endswith("line 19999\n")
    assert len(execution.stdout.encode()) < OUTPUT_LIMIT + 200
    # the traceback is printed last: it survives the cut of a long stderr too
    assert execution.error is not None
    assert execution.error.name == "RuntimeError"


async def test_bash_runs_too(local_sandbox: LocalSandbox) -> None:
    if "bash" not in local_sandbox.languages:
        pytest.skip("no /bin/bash on this machine")
    execution = await local_sandbox.run(spec("echo hello $((6*7))\nexit 4", language="bash"))
    assert execution.stdout == "hello 42\n"
    assert execution.exit_code == 4


async def test_an_unknown_language_is_answered_not_run(local_sandbox: LocalSandbox) -> None:
    execution = await local_sandbox.run(spec("puts 1", language="ruby"))
    assert execution.error is not None
    assert execution.error.name == "UnsupportedLanguage"
    assert "python" in execution.error.value


async def test_runs_are_independent_and_concurrent(local_sandbox: LocalSandbox) -> None:
    first, second = await asyncio.gather(
        local_sandbox.run(spec("x = 1\nimport time\ntime.sleep(0.3)\nprint(x)")),
        local_sandbox.run(spec("print('x' in dir())")),
    )
    assert first.stdout == "1\n"
    assert second.stdout == "False\n"


async def test_the_code_sees_an_empty_environment_and_an_unprivileged_user(isolated_sandbox: LocalSandbox) -> None:
    code = "import os, sys\nprint(sorted(os.environ))\nprint(os.getuid(), os.getpid(), sys.executable)"
    execution = await isolated_sandbox.run(spec(code))
    names, ids = execution.stdout.splitlines()
    # besides the basics, only what the sandbox's Python environment needs (none of the orchestrator's)
    python_env = {"MPLBACKEND", "MPLCONFIGDIR", "ATHENIC_FIGURES_FD", "ATHENIC_FIGURES_MAX",
                  "ATHENIC_FIGURES_MAX_BYTES", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"}
    assert set(eval(names)) <= {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "PWD", "LC_CTYPE", *python_env}
    uid, pid, executable = ids.split()
    assert uid == "65534"
    assert int(pid) <= 3, "the code should be in a PID namespace of its own"
    # the environment's interpreter (a link to /usr/bin/python3), or the bare one without it
    assert executable == ("/opt/sandbox-python/bin/python" if isolated_sandbox.python_env else "/usr/bin/python3")


async def test_the_system_is_read_only_and_the_host_is_out_of_sight(isolated_sandbox: LocalSandbox) -> None:
    code = (
        "import os\n"
        "for path in ('/usr/evil', '/etc/evil', '/evil', '/dev/evil', '/proc/evil', '/sandbox/evil'):\n"
        "    try:\n"
        "        open(path, 'w')\n"
        "        print('wrote', path)\n"
        "    except OSError as exc:\n"
        "        print('refused', path, type(exc).__name__)\n"
        "print(sorted(os.listdir('/')))\n"
        f"print(os.path.exists({str(__file__)!r}))\n"
        "open('/tmp/scratch', 'w').write('ok')\n"
        "print(open('/tmp/scratch').read())\n"
    )
    execution = await isolated_sandbox.run(spec(code))
    assert "wrote" not in execution.stdout
    assert execution.stdout.count("refused") == 6
    listing = execution.stdout.splitlines()[6]
    for private in ("home", "root", "run", "var", "work"):
        assert f"'{private}'" not in listing
    assert execution.stdout.splitlines()[7:] == ["False", "ok"]


async def test_without_bubblewrap_it_warns_loudly_and_still_runs() -> None:
    with structlog.testing.capture_logs() as logs:
        backend = LocalSandbox(output_limit_bytes=OUTPUT_LIMIT, bwrap_path="/nonexistent/bwrap")
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 1
    assert "NOT ISOLATED" in warnings[0]["event"]
    assert not backend.isolated
    execution = await backend.run(spec("print(1)"))
    assert execution.stdout == "1\n"
    await backend.aclose()


async def test_a_bubblewrap_that_cannot_work_here_is_detected_at_start() -> None:
    """Installed but refused by the kernel (no unprivileged user namespaces, a container's
    seccomp profile): the probe at start sees it, says why, and the backend degrades."""
    home = Path(tempfile.mkdtemp(prefix="fake-bwrap-"))
    try:
        home.chmod(0o755)
        fake = home / "bwrap"
        fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
        fake.chmod(0o755)
        with structlog.testing.capture_logs() as logs:
            backend = LocalSandbox(output_limit_bytes=OUTPUT_LIMIT, bwrap_path=str(fake))
        assert not backend.isolated
        (warning,) = [entry for entry in logs if entry["log_level"] == "warning"]
        assert "uid map: Permission denied" in warning["reason"]
        assert (await backend.run(spec("print(1)"))).stdout == "1\n"
        await backend.aclose()
    finally:
        shutil.rmtree(home)


def test_isolation_can_be_required() -> None:
    with pytest.raises(TerminalError, match="bubblewrap"):
        LocalSandbox(output_limit_bytes=OUTPUT_LIMIT, bwrap_path="/nonexistent/bwrap", require_isolation=True)
