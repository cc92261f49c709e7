"""Idle E2B sandboxes across replicas: paused past a tenant's bound, killed after retention.

Any replica may run these (every one does, periodically and after its runs); each change is a
compare-and-set on the conversation's record, so a sandbox is paused or killed once, and never
while a run is using it (the record says ``busy``).

- **Retention**: a conversation's sandbox not used for its ``retentionSeconds`` (the tenant's
  ``sandboxRetentionSeconds`` at its last run) is killed and its record removed; the next
  message of that conversation gets a fresh sandbox.
- **Per-tenant bound**: a tenant keeps at most ``maxIdleSandboxes`` idle *running* sandboxes
  (they bill compute) and ``maxPausedSandboxes`` paused ones; past a bound the least recently
  used are paused, respectively killed, first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec

from athenic.orchestrator.sandbox.e2b_control import E2BControl
from athenic.orchestrator.sandbox.e2b_directory import Conflict, Entry, SandboxDirectory, now
from athenic.orchestrator.sandbox.e2b_metrics import SANDBOX_EVENTS
from athenic.shared.logging import get_logger

log = get_logger(__name__)


def _beyond(least_recent_first: list[Entry], bound: int) -> list[Entry]:
    """The entries past ``bound``: the least recently used go first."""
    return least_recent_first[: max(0, len(least_recent_first) - bound)]


class Upkeep:
    def __init__(self, directory: SandboxDirectory, control: E2BControl) -> None:
        self.directory = directory
        self.control = control

    async def expire(self, entries: list[Entry]) -> int:
        """Kill every sandbox past its retention; the number killed."""
        moment = now()
        killed = 0
        for entry in entries:
            record = entry.record
            if record.busy_now(moment) or moment - record.last_used <= record.retention_seconds:
                continue
            if await self.kill(entry, reason="retention"):
                killed += 1
        return killed

    async def bound(self, entries: list[Entry], tenant: str, *, max_idle: int, max_paused: int) -> None:
        """Hold ``tenant`` to its bounds, least recently used first."""
        moment = now()
        mine = sorted((entry for entry in entries if entry.record.tenant == tenant),
                      key=lambda entry: entry.record.last_used)
        idle = [entry for entry in mine if entry.record.state == "running" and not entry.record.busy_now(moment)]
        paused = [entry for entry in mine if entry.record.state == "paused"]
        for entry in _beyond(idle, max_idle):
            if await self.pause(entry, reason="tenant idle bound"):
                paused.append(entry)
        paused.sort(key=lambda entry: entry.record.last_used)
        for entry in _beyond(paused, max_paused):
            await self.kill(entry, reason="tenant paused bound")

    async def pause(self, entry: Entry, *, reason: str) -> bool:
        """Mark the record paused (compare-and-set), then pause the sandbox; False when lost."""
        paused = msgspec.structs.replace(entry.record, state="paused", busy=False)
        try:
            await self.directory.put(entry.key, paused, revision=entry.revision)
        except Conflict:
            return False
        # the record says paused: a connect resumes it either way, and E2B pauses it when its
        # lifetime runs out (our sandboxes are created with on_timeout=pause)
        await self._act(entry, "pause", "paused", self.control.pause, reason)
        return True

    async def kill(self, entry: Entry, *, reason: str) -> bool:
        """Remove the record (compare-and-set), then kill the sandbox; False when lost."""
        try:
            await self.directory.remove(entry.key, revision=entry.revision)
        except Conflict:
            return False
        await self._act(entry, "kill", "killed", self.control.kill, reason)
        return True

    @staticmethod
    async def _act(entry: Entry, verb: str, done: str, action: Callable[[str], Awaitable[object]],
                   reason: str) -> None:
        """Once the record is changed (this replica won it), do the same to the sandbox; a failure
        is logged, not raised: the record already says what the sandbox is to be."""
        sandbox_id = entry.record.sandbox_id
        try:
            await action(sandbox_id)
        except Exception as exc:
            log.warning(f"e2b sandbox {verb} failed", client_id=entry.key, sandbox_id=sandbox_id, reason=reason,
                        error=f"{type(exc).__name__}: {exc}")
            return
        SANDBOX_EVENTS.labels(done, reason).inc()
        log.info(f"e2b sandbox {done}", client_id=entry.key, sandbox_id=sandbox_id, reason=reason)
