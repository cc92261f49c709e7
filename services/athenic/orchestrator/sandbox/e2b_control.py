"""E2B's control plane as the backend uses it: create, connect (resumes), pause, kill, timeouts.

One place for the SDK's options (key, request timeout, retries) and for the lifecycle every
sandbox of ours is created with: ``on_timeout: pause`` with ``auto_resume``, so a sandbox whose
orchestrator died is paused by E2B when its lifetime runs out (its kernel state kept) rather
than killed, and traffic to a paused sandbox wakes it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from e2b_code_interpreter import AsyncSandbox

DEFAULT_TEMPLATE: str = str(AsyncSandbox.default_template)
_LIFECYCLE: dict[str, Any] = {"on_timeout": "pause", "auto_resume": True}
_CALL_BOUND_SECONDS = 30.0


class E2BControl:
    def __init__(self, *, api_key: str, request_timeout_seconds: float, api_retries: int | None) -> None:
        self.api_key = api_key
        self.request_timeout = request_timeout_seconds
        # None: the SDK's default (a few quick retries of 429/502/503/504 on the control plane)
        self._retries: dict[str, Any] = {} if api_retries is None else {"retries": api_retries}

    def _opts(self) -> dict[str, Any]:
        return {"api_key": self.api_key, "request_timeout": self.request_timeout, **self._retries}

    async def create(self, *, template: str, allow_internet: bool, lifetime: int,
                     metadata: dict[str, str]) -> Any:
        return await AsyncSandbox.create(
            template=template, timeout=lifetime, metadata=metadata, allow_internet_access=allow_internet,
            lifecycle=_LIFECYCLE, **self._opts(),
        )

    async def connect(self, sandbox_id: str, *, lifetime: int) -> Any:
        """Attach to a sandbox by id, resuming it (kernel state intact) when it is paused."""
        return await AsyncSandbox.connect(sandbox_id, timeout=lifetime, **self._opts())

    async def set_timeout(self, sandbox_id: str, lifetime: int) -> None:
        await AsyncSandbox.set_timeout(sandbox_id, lifetime, **self._opts())

    async def pause(self, sandbox_id: str) -> bool:
        """Pause a sandbox; False when it was paused already. Raises NotFoundException when gone."""
        async with asyncio.timeout(_CALL_BOUND_SECONDS):
            paused: bool = await AsyncSandbox.pause(sandbox_id, **self._opts())
        return paused

    async def kill(self, sandbox_id: str) -> bool:
        """Kill a sandbox, running or paused; False when it was gone already."""
        async with asyncio.timeout(_CALL_BOUND_SECONDS):
            killed: bool = await AsyncSandbox.kill(sandbox_id, **self._opts())
        return killed
