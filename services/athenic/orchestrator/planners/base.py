"""The planner interface: one chat message in, one answer out.

A planner never touches NATS or a sandbox directly; it asks its ``RunContext`` to run code
(the worker applies the tenant's policy, publishes progress and records the execution).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from athenic.shared.messages import ChatRequest, Execution, Phase


@dataclass(frozen=True)
class Answer:
    message: str
    requires_e2b: bool
    executions: list[Execution] = field(default_factory=list)


class RunContext(Protocol):
    """What a planner may do while it answers one message."""

    async def run_code(self, language: str, code: str) -> Execution: ...

    async def phase(self, phase: Phase) -> None:
        """Publish a progress status (planning, running...)."""
        ...

    @property
    def languages(self) -> frozenset[str]:
        """Languages the configured sandbox backend can run."""
        ...


class Planner(Protocol):
    name: str

    async def answer(self, request: ChatRequest, ctx: RunContext) -> Answer: ...

    async def aclose(self) -> None: ...
