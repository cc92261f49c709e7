"""The sandbox interface every backend implements.

A backend runs one piece of code for one client and returns an ``Execution`` (the shared
record of what ran and what it printed). Output chunks are handed to ``on_output`` as they
arrive, for progress events. Cancelling the task that awaits ``run`` must stop the code
(kill the process or the remote execution) before the ``CancelledError`` propagates.
Errors in the user's code are part of the ``Execution``; faults of the backend itself raise
``RetryableError`` or ``TerminalError``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from athenic.orchestrator.sandbox.files import Workspace
from athenic.shared.messages import Execution

Stream = Literal["stdout", "stderr"]
OutputSink = Callable[[Stream, str], Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    client_id: str
    tenant: str = "default"
    language: str
    code: str
    timeout_seconds: float = 30.0
    memory_mib: int = 512
    allow_internet: bool = False
    template: str | None = None
    idle_seconds: int = 300
    # E2B: kill a paused sandbox this long after its last use; the tenant's idle bounds
    retention_seconds: int = 86_400
    max_idle_sandboxes: int = 20
    max_paused_sandboxes: int = 1000
    # the conversation's files for the code, and where it leaves its own (sandbox/files.py)
    workspace: Workspace | None = None


class SandboxBackend(Protocol):
    name: str
    languages: frozenset[str]

    async def run(self, spec: RunSpec, on_output: OutputSink | None = None) -> Execution: ...

    def prepare(self, tenant: str, client_id: str, language: str) -> None:
        """A run of this conversation comes soon (it waits for its quota): start looking up
        what it will need, so that ``run`` need not wait for it. A hint: nothing may depend on
        it (a run without one, or long after it, looks up afresh)."""
        ...

    async def aclose(self) -> None:
        """Release everything the backend holds (processes, remote sandboxes)."""
        ...
