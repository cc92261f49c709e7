"""The E2B backend: one cloud sandbox per conversation, the same whichever replica answers.

A conversation's sandbox is found in the sandboxes bucket (``e2b_directory``): every replica
connects to the sandbox id recorded there, so a variable defined in one message is there in
the next wherever it is answered. A new conversation's first run claims a warm sandbox of its
shape (``e2b_pool``) or creates one (template and internet access from the run's policy).

Lifecycle: a sandbox idle for the policy's ``sandboxIdleSeconds`` is **paused**, not killed
(E2B keeps its memory: the kernel's variables survive), and the next message resumes it
(``connect``). It is killed only after the tenant's ``sandboxRetentionSeconds`` without use,
or when the tenant holds more idle sandboxes than its bounds (``e2b_upkeep``). A replica's
shutdown pauses the sandboxes it last ran; E2B itself pauses a sandbox whose replica died when
its lifetime (idle period + time limit + slack, refreshed on every run) runs out.

Runs of one conversation are serialized here (they share a kernel) and cluster-wide by the
turn order. Output is capped while it streams: past the output limit the execution is stopped
(its stream closed, which interrupts the code) and marked truncated.

Failures: an error in the user's code is part of the ``Execution``; E2B unreachable, timing
out, 5xx or rate limiting raise ``RetryableError``; a rejected key or a refused request
(bad template...) raises ``TerminalError`` with one error log; NATS unreachable is retryable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
from e2b import NotFoundException
from nats.js.kv import KeyValue

from athenic.orchestrator.errors import RetryableError, TerminalError
from athenic.orchestrator.sandbox import e2b_files
from athenic.orchestrator.sandbox.base import OutputSink, RunSpec
from athenic.orchestrator.sandbox.e2b_control import DEFAULT_TEMPLATE, E2BControl
from athenic.orchestrator.sandbox.e2b_directory import Conflict, SandboxDirectory, SandboxRecord, now
from athenic.orchestrator.sandbox.e2b_errors import backend_error
from athenic.orchestrator.sandbox.e2b_metrics import SANDBOX_EVENTS
from athenic.orchestrator.sandbox.e2b_pool import Shape, WarmPool, pool_targets
from athenic.orchestrator.sandbox.e2b_upkeep import Upkeep
from athenic.orchestrator.sandbox.output import CappedText, OutputForwarder
from athenic.orchestrator.sandbox.tracebacks import strip_ansi
from athenic.shared.logging import get_logger
from athenic.shared.messages import Execution, ExecutionError
from athenic.shared.policy import BUILTIN_DEFAULT, SandboxPolicy

log = get_logger(__name__)

# E2B's lifetime of a sandbox beyond our idle period: our idle timer pauses it first; E2B's
# timer (on_timeout=pause) only catches sandboxes whose orchestrator died.
_LIFETIME_SLACK_SECONDS = 60
_SHUTDOWN_WAIT_SECONDS = 10.0
_ATTACH_TRIES = 3


class PolicySource(Protocol):
    """Where the tenants' policies come from (the orchestrator's ``PolicyCache``)."""

    def for_tenant(self, tenant: str) -> SandboxPolicy: ...

    def all(self) -> list[SandboxPolicy]: ...


class _OutputCapReached(Exception):
    """Raised from an output callback to stop the run: it leaves the SDK's stream, closing it."""


@dataclass(eq=False)
class _Session:
    """A sandbox this replica is attached to, and the record revision it wrote last."""

    sandbox: Any  # e2b_code_interpreter.AsyncSandbox (the package has no type information)
    record: SandboxRecord
    revision: int
    reaper: asyncio.Task[None] | None = None


@dataclass(eq=False)
class _ClientLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class E2BSandbox:
    """Construct inside a running event loop: the pool and upkeep rounds start at once."""

    name = "e2b"
    languages: frozenset[str] = frozenset({"python", "javascript", "typescript", "r", "java", "bash"})

    def __init__(
        self,
        *,
        api_key: str,
        output_limit_bytes: int,
        kv: KeyValue,
        policies: PolicySource | None = None,
        default_template: str | None = None,
        request_timeout_seconds: float = 30.0,
        api_retries: int | None = None,
        upkeep_seconds: float = 30.0,
    ) -> None:
        self._output_limit = output_limit_bytes
        self._default_template = default_template
        self._request_timeout = request_timeout_seconds
        self._policies = policies
        self.replica = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.control = E2BControl(api_key=api_key, request_timeout_seconds=request_timeout_seconds,
                                  api_retries=api_retries)
        self.directory = SandboxDirectory(kv)
        self.pool = WarmPool(self.directory, self.control, self.replica,
                             lambda: pool_targets(self._all_policies(), default_template))
        self.upkeep = Upkeep(self.directory, self.control)
        self._upkeep_seconds = upkeep_seconds
        self._sessions: dict[str, _Session] = {}
        self._locks: dict[str, _ClientLock] = {}
        self._closed = False
        self._round_lock = asyncio.Lock()
        self._bound_tenants: dict[str, SandboxPolicy] = {}
        self._bounding: asyncio.Task[None] | None = None
        self.directory.start()
        self._keeper = asyncio.get_running_loop().create_task(self._keep(), name="e2b-upkeep")

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    def _all_policies(self) -> list[SandboxPolicy]:
        return self._policies.all() if self._policies is not None else []

    def _policy_for(self, tenant: str) -> SandboxPolicy:
        return self._policies.for_tenant(tenant) if self._policies is not None else BUILTIN_DEFAULT

    def prepare(self, tenant: str, client_id: str, language: str) -> None:
        """(Nothing ahead: the conversation's sandbox is looked up and connected under its lock.)"""

    async def run(self, spec: RunSpec, on_output: OutputSink | None = None) -> Execution:
        if self._closed:
            raise RetryableError("the E2B backend is shutting down")
        if spec.language not in self.languages:
            return Execution(
                language=spec.language, code=spec.code, backend=self.name,
                error=ExecutionError(name="UnsupportedLanguage",
                                     value=f"E2B runs {', '.join(sorted(self.languages))}, not {spec.language!r}"),
            )
        async with self._client_lock(spec.client_id):
            started = time.monotonic()
            session = await self._attach(spec)
            try:
                return await self._execute(session, spec, on_output, started)
            except NotFoundException:
                # The sandbox died under us (E2B's lifetime, a manual kill) before the code ran.
                await self._forget(spec.client_id, session)
                session = await self._attach(spec)
                try:
                    return await self._execute(session, spec, on_output, started)
                except Exception as exc:
                    raise backend_error(exc, spec.client_id) from exc
            except Exception as exc:
                raise backend_error(exc, spec.client_id) from exc
            finally:
                await self._release(spec, session)

    async def close_session(self, client_id: str) -> None:
        """Kill the conversation's sandbox now (its kernel state is lost)."""
        async with self._client_lock(client_id):
            session = self._sessions.pop(client_id, None)
            if session is not None and session.reaper is not None:
                session.reaper.cancel()
            entry = await self.directory.get(client_id)
            if entry is not None:
                await self.upkeep.kill(entry, reason="closed")

    async def aclose(self) -> None:
        """Pause (never kill) what this replica ran last, and its warm sandboxes."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_SHUTDOWN_WAIT_SECONDS):
                async with self._round_lock:  # let a round in flight finish (no half-made sandbox)
                    self._keeper.cancel()
        self._keeper.cancel()
        if self._bounding is not None:
            self._bounding.cancel()
        sessions = list(self._sessions.items())
        self._sessions.clear()
        for _, session in sessions:
            if session.reaper is not None:
                session.reaper.cancel()
        paused = await asyncio.gather(*(self._pause_if_ours(cid, session, "shutdown") for cid, session in sessions))
        pooled = await self.pool.pause_own()
        await self.directory.aclose()
        log.info("e2b backend closed", paused=sum(paused), warm_paused=pooled)

    # -- attaching a conversation to its sandbox ---------------------------------------------

    def _lifetime(self, spec: RunSpec) -> int:
        return spec.idle_seconds + int(spec.timeout_seconds) + _LIFETIME_SLACK_SECONDS

    def _template(self, spec: RunSpec) -> str:
        return spec.template or self._default_template or DEFAULT_TEMPLATE

    async def _attach(self, spec: RunSpec) -> _Session:
        """The conversation's sandbox, running, its record marked busy by this replica."""
        local = self._sessions.get(spec.client_id)
        if local is not None and local.reaper is not None:
            local.reaper.cancel()
            local.reaper = None
        for _ in range(_ATTACH_TRIES):
            try:
                return await self._attach_once(spec, local)
            except Conflict:
                continue  # an upkeep round changed the record meanwhile: read it again
            except (RetryableError, TerminalError):
                raise
            except Exception as exc:
                raise backend_error(exc, spec.client_id) from exc
        raise RetryableError("the conversation's sandbox record kept changing; try again")

    async def _attach_once(self, spec: RunSpec, local: _Session | None) -> _Session:
        entry = await self.directory.get(spec.client_id)
        template = self._template(spec)
        if entry is not None and (entry.record.template, entry.record.allow_internet) != (template,
                                                                                          spec.allow_internet):
            # The policy changed under a live sandbox: start over with the new one.
            await self.upkeep.kill(entry, reason="policy changed")
            entry = None
        if entry is None:
            self._sessions.pop(spec.client_id, None)
            return await self._start(spec, template)
        record = msgspec.structs.replace(
            entry.record, state="running", busy=True, holder=self.replica, last_used=now(),
            tenant=spec.tenant, retention_seconds=spec.retention_seconds,
        )
        # busy before we touch it: from here on no upkeep round pauses or kills it
        revision = await self.directory.put(spec.client_id, record, revision=entry.revision)
        warm = (local is not None and local.record.sandbox_id == record.sandbox_id
                and local.revision == entry.revision and entry.record.state == "running")
        try:
            if warm:
                assert local is not None
                sandbox = local.sandbox
                await self.control.set_timeout(record.sandbox_id, self._lifetime(spec))
            else:
                sandbox = await self.control.connect(record.sandbox_id, lifetime=self._lifetime(spec))
                SANDBOX_EVENTS.labels("attached", "resumed" if entry.record.state == "paused" else "running").inc()
                log.info("e2b sandbox attached", client_id=spec.client_id, sandbox_id=record.sandbox_id,
                         resumed=entry.record.state == "paused", replica=self.replica)
        except NotFoundException:
            log.info("e2b sandbox gone; starting a fresh one (kernel state lost)", client_id=spec.client_id,
                     sandbox_id=record.sandbox_id)
            with contextlib.suppress(Conflict):
                await self.directory.remove(spec.client_id, revision=revision)
            self._sessions.pop(spec.client_id, None)
            return await self._start(spec, template)
        except BaseException:
            # E2B unreachable (retried later): the record must not stay busy, or no round would
            # pause or expire it
            with contextlib.suppress(Exception):
                await self.directory.put(spec.client_id, msgspec.structs.replace(record, busy=False),
                                         revision=revision)
            raise
        session = _Session(sandbox=sandbox, record=record, revision=revision)
        self._sessions[spec.client_id] = session
        return session

    async def _start(self, spec: RunSpec, template: str) -> _Session:
        """A sandbox for a conversation that has none: warm from the pool, else created."""
        lifetime = self._lifetime(spec)
        sandbox = await self.pool.claim(Shape(template, spec.allow_internet), lifetime=lifetime,
                                        client_id=spec.client_id)
        if sandbox is None:
            sandbox = await self.control.create(
                template=template, allow_internet=spec.allow_internet, lifetime=lifetime,
                metadata={"service": "athenic", "clientId": spec.client_id},
            )
            SANDBOX_EVENTS.labels("created", "new conversation").inc()
            log.info("e2b sandbox created", client_id=spec.client_id, sandbox_id=sandbox.sandbox_id,
                     template=template, replica=self.replica)
        record = SandboxRecord(
            sandbox_id=sandbox.sandbox_id, template=template, allow_internet=spec.allow_internet,
            tenant=spec.tenant, state="running", last_used=now(), retention_seconds=spec.retention_seconds,
            busy=True, holder=self.replica,
        )
        try:
            revision = await self.directory.force(spec.client_id, record)
        except Exception as exc:
            await self._kill_quietly(sandbox.sandbox_id, "record not written")
            raise RetryableError(f"the sandbox record could not be written to NATS: {exc}") from exc
        session = _Session(sandbox=sandbox, record=record, revision=revision)
        self._sessions[spec.client_id] = session
        return session

    # -- after a run: idle timer, pause, bounds ------------------------------------------------

    async def _release(self, spec: RunSpec, session: _Session) -> None:
        if self._sessions.get(spec.client_id) is not session:
            return
        record = msgspec.structs.replace(session.record, busy=False, last_used=now())
        try:
            session.revision = await self.directory.put(spec.client_id, record, revision=session.revision)
            session.record = record
        except Exception as exc:
            # another replica's round took it, or NATS is away: the next run reads it afresh
            log.warning("e2b sandbox record not released", client_id=spec.client_id, error=str(exc))
            self._sessions.pop(spec.client_id, None)
            return
        session.reaper = asyncio.create_task(self._reap(spec.client_id, session, spec.idle_seconds),
                                             name=f"e2b-idle-{spec.client_id}")
        self._bound_tenants[spec.tenant] = msgspec.structs.replace(
            self._policy_for(spec.tenant), max_idle_sandboxes=spec.max_idle_sandboxes,
            max_paused_sandboxes=spec.max_paused_sandboxes)
        if self._bounding is None or self._bounding.done():
            self._bounding = asyncio.create_task(self._bound_pending(), name="e2b-tenant-bounds")

    async def _reap(self, client_id: str, session: _Session, idle_seconds: int) -> None:
        await asyncio.sleep(idle_seconds)
        async with self._client_lock(client_id):
            if self._sessions.get(client_id) is session:
                del self._sessions[client_id]
                await self._pause_if_ours(client_id, session, "idle")

    async def _pause_if_ours(self, client_id: str, session: _Session, reason: str) -> bool:
        """Pause the sandbox unless another replica used it since this one did."""
        try:
            entry = await self.directory.get(client_id)
            if entry is None or entry.revision != session.revision:
                return False
            return await self.upkeep.pause(entry, reason=reason)
        except Exception as exc:
            log.warning("e2b sandbox not paused", client_id=client_id, reason=reason, error=str(exc))
            return False

    async def _forget(self, client_id: str, session: _Session) -> None:
        self._sessions.pop(client_id, None)
        with contextlib.suppress(Exception):
            await self.directory.remove(client_id, revision=session.revision)

    async def _kill_quietly(self, sandbox_id: str, reason: str) -> None:
        try:
            await self.control.kill(sandbox_id)
        except Exception as exc:
            log.warning("e2b sandbox kill failed", sandbox_id=sandbox_id, reason=reason, error=str(exc))

    async def _bound_pending(self) -> None:
        """Hold the tenants of the latest runs to their idle bounds (one pass at a time)."""
        while self._bound_tenants:
            tenants, self._bound_tenants = self._bound_tenants, {}
            try:
                entries = await self.directory.records()
                for tenant, policy in tenants.items():
                    await self.upkeep.bound(entries, tenant, max_idle=policy.max_idle_sandboxes,
                                            max_paused=policy.max_paused_sandboxes)
            except Exception as exc:
                log.warning("e2b tenant bounds not applied", error=f"{type(exc).__name__}: {exc}")

    async def _keep(self) -> None:
        """Every ``upkeep_seconds`` (or when a claim emptied a slot): refill, expire, bound."""
        while True:
            async with self._round_lock:
                await self._round()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._upkeep_seconds):
                    await self.pool.wanted.wait()
            self.pool.wanted.clear()

    async def _round(self) -> None:
        try:
            if self._policies is not None:  # without the tenants' policies it cannot know what is wanted
                await self.pool.refill()
        except Exception as exc:
            log.warning("e2b warm pool round failed", error=f"{type(exc).__name__}: {exc}")
        try:
            entries = await self.directory.records()
            await self.upkeep.expire(entries)
            for tenant in {entry.record.tenant for entry in entries}:
                policy = self._policy_for(tenant)
                await self.upkeep.bound(entries, tenant, max_idle=policy.max_idle_sandboxes,
                                        max_paused=policy.max_paused_sandboxes)
        except Exception as exc:
            log.warning("e2b upkeep round failed", error=f"{type(exc).__name__}: {exc}")

    async def _execute(self, session: _Session, spec: RunSpec, on_output: OutputSink | None,
                       started: float) -> Execution:
        await e2b_files.stage(session.sandbox, spec.workspace)  # conversation files in (e2b_files.py)
        stdout, stderr = CappedText(self._output_limit), CappedText(self._output_limit)
        forward = OutputForwarder(on_output)

        async def on_stdout(message: Any) -> None:
            await forward("stdout", stdout.feed_text(message.line))
            if stdout.truncated:
                raise _OutputCapReached

        async def on_stderr(message: Any) -> None:
            await forward("stderr", stderr.feed_text(message.line))
            if stderr.truncated:
                raise _OutputCapReached

        # Collected as they come, not from the SDK's answer: a run stopped mid-way has none.
        results: list[dict[str, Any]] = []

        async def on_result(item: Any) -> None:
            results.append(_result_formats(item))

        timed_out = over_cap = False
        result: Any = None
        try:
            async with asyncio.timeout(spec.timeout_seconds):
                # Cancelling this (timeout, or the caller's task) closes the HTTP/1.1 stream, and
                # the code interpreter interrupts the execution when its client goes away.
                result = await session.sandbox.run_code(
                    spec.code,
                    language=None if spec.language == "python" else spec.language,
                    on_stdout=on_stdout,
                    on_stderr=on_stderr,
                    on_result=on_result,
                    # 0: no deadline of the SDK's own. With one, its transport reads through
                    # asyncio.wait_for, which on cancellation waits for the pending read to
                    # finish (seen here: a minute, until the code printed again); ours cancels
                    # the read at once.
                    timeout=0,
                    request_timeout=self._request_timeout,
                )
        except TimeoutError:
            timed_out = True
        except _OutputCapReached:
            over_cap = True
        error: ExecutionError | None = None
        if timed_out:
            error = ExecutionError(
                name="TimeoutError",
                value=f"the code ran longer than the {spec.timeout_seconds:g} s time limit and was stopped",
            )
        elif over_cap:
            error = ExecutionError(
                name="OutputLimitExceeded",
                value=f"the code printed more than the {self._output_limit} byte output limit and was stopped",
            )
        elif result.error is not None:
            error = ExecutionError(name=str(result.error.name), value=strip_ansi(str(result.error.value)),
                                   traceback=strip_ansi(str(result.error.traceback)))
        await e2b_files.collect(session.sandbox, spec.workspace)  # files/out down (e2b_files.py)
        return Execution(
            language=spec.language,
            code=spec.code,
            stdout=stdout.text(),
            stderr=stderr.text(),
            results=results,
            error=error,
            duration_ms=int((time.monotonic() - started) * 1000),
            timed_out=timed_out,
            truncated=stdout.truncated or stderr.truncated,
            backend=self.name,
        )

    @contextlib.asynccontextmanager
    async def _client_lock(self, client_id: str) -> AsyncIterator[None]:
        entry = self._locks.setdefault(client_id, _ClientLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0 and client_id not in self._sessions:
                self._locks.pop(client_id, None)


def _result_formats(result: Any) -> dict[str, Any]:
    """One rich result as a dict keyed by format (text, png as base64, json, html...)."""
    formats: dict[str, Any] = {}
    for name in result.formats():
        value = result[name]
        if name == "chart" and value is not None:
            value = value.to_dict()
        formats[str(name)] = value
    return formats
