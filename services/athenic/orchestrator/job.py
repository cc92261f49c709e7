"""One message being answered: the ``RunContext`` a planner works through.

It applies the tenant's sandbox policy to every run, streams output as progress events and
keeps the executions so far (a cancelled answer still shows what ran).
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from athenic.orchestrator.events import EventPublisher
from athenic.orchestrator.sandbox.base import RunSpec, SandboxBackend, Stream
from athenic.orchestrator.settings import OrchestratorSettings
from athenic.shared.messages import ChatRequest, Execution, Phase
from athenic.shared.policy import SandboxPolicy


class ExecutionGate(Protocol):
    """Admission of one execution under a tenant's quota (see quota.py)."""

    def slot(self, tenant: str, policy: SandboxPolicy) -> AbstractAsyncContextManager[None]: ...


class Job:
    def __init__(
        self,
        request: ChatRequest,
        settings: OrchestratorSettings,
        sandbox: SandboxBackend,
        events: EventPublisher,
        policy: SandboxPolicy,
        gate: ExecutionGate,
    ) -> None:
        self.request = request
        self.settings = settings
        self.sandbox = sandbox
        self.events = events
        self.policy = policy
        self.gate = gate
        self.executions: list[Execution] = []
        self.task: asyncio.Task[Any] | None = None
        self.cancelled_by_user = False

    @property
    def languages(self) -> frozenset[str]:
        return self.sandbox.languages

    async def phase(self, phase: Phase) -> None:
        await self.events.phase(phase)

    async def run_code(self, language: str, code: str) -> Execution:
        spec = RunSpec(
            client_id=self.request.client_id,
            language=language,
            code=code,
            timeout_seconds=min(self.settings.athenic_execution_timeout_seconds,
                                float(self.policy.max_execution_seconds)),
            memory_mib=self.policy.memory_mib,
            allow_internet=self.policy.allow_internet,
            template=self.policy.e2b_template or self.settings.e2b_template,
            idle_seconds=self.policy.sandbox_idle_seconds,
        )
        async with self.gate.slot(self.request.tenant, self.policy):
            await self.events.phase("running")

            async def forward(stream: Stream, chunk: str) -> None:
                await self.events.output(stream, chunk)

            execution = await self.sandbox.run(spec, on_output=forward)
        self.executions.append(execution)
        return execution

    def cancel(self) -> bool:
        if self.task is None or self.task.done():
            return False
        self.cancelled_by_user = True
        self.task.cancel()
        return True
