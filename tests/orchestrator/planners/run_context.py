"""A test double of the sandbox for planner tests: ``/usr/bin/python3`` in a plain subprocess.

It has none of the sandbox's isolation or limits (those are the sandbox backends' own tests);
it only gives the planner real runs with real output, and records the phases and deltas it was told.
"""

from __future__ import annotations

import asyncio
import os
import time

from athenic.shared.files import FileInfo
from athenic.shared.messages import Execution, ExecutionError, Phase, Turn


def _error_of(stderr: str) -> ExecutionError | None:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    if not lines:
        return None
    name, _, value = lines[-1].partition(": ")
    return ExecutionError(name=name.strip(), value=value, traceback=stderr)


class SubprocessRunContext:
    def __init__(self, languages: frozenset[str] = frozenset({"python"}), timeout: float = 10.0,
                 turns: list[Turn] | None = None, files: list[FileInfo] | None = None) -> None:
        self._languages = languages
        # the conversation's files as the worker would list them
        self.conversation_files: list[FileInfo] = files or []
        # the conversation log as the worker would read it (helpers.ask appends each answered turn)
        self.turns: list[Turn] = turns if turns is not None else []
        self.executions: list[Execution] = []
        self._timeout = timeout
        self.phases: list[Phase] = []
        self.deltas: list[str] = []
        # what the client would see, in order: ("status", phase) or ("delta", text)
        self.events: list[tuple[str, str]] = []
        self.runs: list[tuple[str, str]] = []

    @property
    def languages(self) -> frozenset[str]:
        return self._languages

    async def history(self, limit: int) -> list[Turn]:
        return self.turns[-limit:] if limit > 0 else []

    async def files(self) -> list[FileInfo]:
        return list(self.conversation_files)

    async def phase(self, phase: Phase) -> None:
        self.phases.append(phase)
        self.events.append(("status", phase))

    async def delta(self, text: str) -> None:
        self.deltas.append(text)
        self.events.append(("delta", text))

    async def run_code(self, language: str, code: str) -> Execution:
        assert language in self._languages, language
        self.runs.append((language, code))
        self.events.append(("status", "running"))
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            "/usr/bin/python3", "-c", code,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={"PATH": os.defpath},
        )
        timed_out = False
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self._timeout)
        except TimeoutError:
            proc.kill()
            out, err = await proc.communicate()
            timed_out = True
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        execution = Execution(
            language=language,
            code=code,
            stdout=stdout,
            stderr=stderr,
            error=_error_of(stderr) if proc.returncode else None,
            exit_code=proc.returncode,
            duration_ms=round((time.monotonic() - started) * 1000),
            timed_out=timed_out,
            backend="test-subprocess",
        )
        self.executions.append(execution)
        return execution
