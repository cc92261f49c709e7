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

from athenic.orchestrator.events import EventPublisher
from athenic.orchestrator.sandbox.base import RunSpec, SandboxBackend, Stream
from athenic.orchestrator.settings import OrchestratorSettings
from athenic.shared.messages import ChatRequest, Execution, Phase, Turn, iso_timestamp
from athenic.shared.policy import SandboxPolicy


class ExecutionGate(Protocol):
    """Admission of one execution under a tenant's quota (see quota.py): held around the run,
    it yields the policy in force at admission; ``on_queued`` is awaited if the run must wait."""

    def slot(self, tenant: str, policy: SandboxPolicy, request_id: str = "",
             on_queued: Callable[[], Awaitable[None]] | None = None) -> AbstractAsyncContextManager[SandboxPolicy]: ...


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
    ) -> None:
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

        async with self.gate.slot(self.request.tenant, self.policy, self.request.request_id,
                                  on_queued=queued) as policy:
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
            )
            await self.events.phase("running")
            started_at = iso_timestamp()
            execution = await self.sandbox.run(spec, on_output=forward)
        execution = msgspec.structs.replace(execution, started_at=started_at)
        self.executions.append(execution)
        return execution

    def cancel(self, reason: str) -> bool:
        if self.task is None or self.task.done():
            return False
        self.cancelled_because = reason
        self.task.cancel()
        return True
