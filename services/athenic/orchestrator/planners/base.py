"""The planner interface: one chat message in, one answer out.

A planner never touches NATS or a sandbox directly; it asks its ``RunContext`` to run code
(the worker applies the tenant's policy, publishes progress and records the execution).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from athenic.shared.files import FileInfo
from athenic.shared.messages import ChatRequest, Execution, Phase, Turn


@dataclass(frozen=True)
class Answer:
    """The answer's text; what ran for it is kept by the ``RunContext`` (the one list of executions)."""

    message: str
    requires_e2b: bool


class RunContext(Protocol):
    """What a planner may do while it answers one message."""

    async def run_code(self, language: str, code: str) -> Execution: ...

    async def history(self, limit: int) -> list[Turn]:
        """The conversation's last ``limit`` finished turns, oldest first (the conversation log)."""
        ...

    async def files(self) -> list[FileInfo]:
        """The conversation's files (what the code finds under ``files/``)."""
        ...

    async def phase(self, phase: Phase) -> None:
        """Publish a progress status (planning, running...)."""
        ...

    async def delta(self, text: str) -> None:
        """Publish the answer's next text as it is written. The answer's ``message`` must begin
        with everything sent so far (what the worker finds missing at the end it sends itself)."""
        ...

    @property
    def languages(self) -> frozenset[str]:
        """Languages the configured sandbox backend can run."""
        ...


class Planner(Protocol):
    name: str

    async def answer(self, request: ChatRequest, ctx: RunContext) -> Answer: ...

    def first_run(self, request: ChatRequest, languages: frozenset[str]) -> str | None:
        """The language of the first code the answer will run, when the message alone tells
        (the worker looks up what that run needs while it reads the conversation); None when
        no run is expected or only planning can tell."""
        ...

    async def aclose(self) -> None: ...
