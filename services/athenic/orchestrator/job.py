"""One message being answered: the ``RunContext`` a planner works through.

It applies the tenant's sandbox policy to every run, streams output and answer text as progress
events, keeps the executions so far (the one list of them: a cancelled answer still shows what
ran) and gives the planner the conversation's earlier turns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import msgspec

from athenic.orchestrator.conversation_files import ConversationFiles
from athenic.orchestrator.events import EventPublisher
from athenic.orchestrator.sandbox.base import OutputSink, RunSpec, SandboxBackend, Stream
from athenic.orchestrator.sandbox.files import Workspace
from athenic.orchestrator.settings import OrchestratorSettings
from athenic.shared.files import FileInfo
from athenic.shared.messages import ChatRequest, Execution, Phase, Turn, iso_timestamp
from athenic.shared.policy import SandboxPolicy


class ExecutionGate(Protocol):
    """Admission of one execution under a tenant's quota (see quota.py): held around the run,
    it yields the policy in force at admission; ``on_queued`` is awaited if the run must wait."""

    def slot(self, tenant: str, policy: SandboxPolicy, request_id: str = "",
             on_queued: Callable[[], Awaitable[None]] | None = None) -> AbstractAsyncContextManager[SandboxPolicy]: ...

    def ahead(self, tenant: str, request_id: str) -> None:
        """Try to admit the first run of ``request_id`` now, before it asks (no waiting)."""

    async def settled(self, request_id: str) -> None:
        """Wait until the slots the runs of ``request_id`` gave back (or did not take) are released."""


class Job:
    def __init__(
        self,
        request: ChatRequest,
        seq: int,
        settings: OrchestratorSettings,
        sandbox: SandboxBackend,
        events: EventPublisher,
        policy: SandboxPolicy,
        gate: ExecutionGate,
        history: Callable[[int], Awaitable[list[Turn]]],
        on_queued: Callable[[], None] | None = None,
        files: ConversationFiles | None = None,
    ) -> None:
        self._files = files  # None: runs see no conversation files and keep none
        self._on_queued = on_queued  # the worker frees this message's slot while a quota queues it
        self.request = request
        self.seq = seq  # the message's request-stream sequence
        self._history = history
        self.settings = settings
        self.sandbox = sandbox
        self.events = events
        self.policy = policy
        self.gate = gate
        self.executions: list[Execution] = []
        self.task: asyncio.Task[Any] | None = None
        self.cancelled_because: str | None = None

    @property
    def languages(self) -> frozenset[str]:
        return self.sandbox.languages

    async def history(self, limit: int) -> list[Turn]:
        return await self._history(limit)

    async def files(self) -> list[FileInfo]:
        return await self._files.available() if self._files is not None else []

    async def phase(self, phase: Phase) -> None:
        await self.events.phase(phase)

    async def delta(self, text: str) -> None:
        await self.events.delta(text)

    async def run_code(self, language: str, code: str) -> Execution:
        async def queued() -> None:
            if self._on_queued is not None:
                self._on_queued()
            await self.events.phase("queued")

        async def forward(stream: Stream, chunk: str) -> None:
            await self.events.output(stream, chunk)

        # the conversation's files for the code (sandbox/files.py); what it makes is kept below
        # (listed, like what the sandbox looks up ahead, while the quota admits the run: each is
        # a broker's answer away)
        staging = asyncio.ensure_future(self._files.workspace()) if self._files is not None else None
        self.sandbox.prepare(self.request.tenant, self.request.client_id, language)
        try:
            async with self.gate.slot(self.request.tenant, self.policy, self.request.request_id,
                                      on_queued=queued) as policy:
                workspace = await staging if staging is not None else None
                execution = await self._run(language, code, policy, workspace, forward)
        finally:
            if staging is not None:
                staging.cancel()  # (refused by the quota: no workspace is needed)
                if staging.done() and not staging.cancelled():
                    staging.exception()  # (its fault, if any, counts as seen)
        if self._files is not None:
            execution = await self._files.collect(execution, workspace, run=len(self.executions) + 1)
        self.executions.append(execution)
        return execution

    async def _run(self, language: str, code: str, policy: SandboxPolicy, workspace: Workspace | None,
                   forward: OutputSink) -> Execution:
        # the policy in force when the quota admitted the run, not when the message arrived
        self.policy = policy
        spec = RunSpec(
            client_id=self.request.client_id,
            tenant=self.request.tenant,
            language=language,
            code=code,
            timeout_seconds=min(self.settings.athenic_execution_timeout_seconds,
                                float(policy.max_execution_seconds)),
            memory_mib=policy.memory_mib,
            allow_internet=policy.allow_internet,
            template=policy.e2b_template or self.settings.e2b_template,
            idle_seconds=policy.sandbox_idle_seconds,
            retention_seconds=policy.sandbox_retention_seconds,
            max_idle_sandboxes=policy.max_idle_sandboxes,
            max_paused_sandboxes=policy.max_paused_sandboxes,
            workspace=workspace,
        )
        await self.events.phase("running")
        started_at = iso_timestamp()
        execution = await self.sandbox.run(spec, on_output=forward)
        return msgspec.structs.replace(execution, started_at=started_at)

    def cancel(self, reason: str) -> bool:
        if self.task is None or self.task.done():
            return False
        self.cancelled_because = reason
        self.task.cancel()
        return True
