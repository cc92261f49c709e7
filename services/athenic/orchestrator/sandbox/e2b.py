"""The E2B backend: one cloud sandbox per clientId, a stateful kernel reused across messages.

A client's sandbox is created on its first run (template and internet access from the run's
policy), reused while it is used (a variable defined in one message is there in the next),
and killed after ``idle_seconds`` without a run and on ``aclose``. Runs of one client are
serialized (they share a kernel). E2B's own lifetime for the sandbox is set a little past the
idle period and refreshed on every run, so a sandbox outlives a crashed orchestrator only
briefly.

Output is capped while it streams: once a run has printed more than the output limit on
stdout or stderr, the execution is stopped (its stream closed, which interrupts the code) and
marked truncated, so a program printing forever costs neither the time limit nor memory.

Failures: an error in the user's code is part of the ``Execution``; E2B unreachable, timing
out, 5xx or rate limiting raise ``RetryableError``; a rejected key or a refused request
(bad template...) raises ``TerminalError`` with one error log.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from e2b import (
    AuthenticationException,
    InvalidArgumentException,
    NotFoundException,
    RateLimitException,
    SandboxException,
    TemplateException,
)
from e2b import TimeoutException as E2BTimeout
from e2b.exceptions import ServiceBusyException
from e2b_code_interpreter import AsyncSandbox

from athenic.orchestrator.errors import RetryableError, TerminalError
from athenic.orchestrator.sandbox import e2b_files
from athenic.orchestrator.sandbox.base import OutputSink, RunSpec
from athenic.orchestrator.sandbox.output import CappedText, OutputForwarder
from athenic.orchestrator.sandbox.tracebacks import strip_ansi
from athenic.shared.logging import get_logger
from athenic.shared.messages import Execution, ExecutionError

log = get_logger(__name__)

# E2B's lifetime of a sandbox beyond our idle period: our reaper kills it first; E2B's timer
# only catches sandboxes an orchestrator crash left behind.
_LIFETIME_SLACK_SECONDS = 60
_KILL_TIMEOUT_SECONDS = 10.0
_STATUS_PREFIX = re.compile(r"^(\d{3})\b")


class _OutputCapReached(Exception):
    """Raised from an output callback to stop the run: it leaves the SDK's stream, closing it."""


@dataclass(eq=False)
class _Session:
    sandbox: Any  # e2b_code_interpreter.AsyncSandbox (the package has no type information)
    template: str | None
    allow_internet: bool
    idle_seconds: int = 300
    reaper: asyncio.Task[None] | None = None


@dataclass(eq=False)
class _ClientLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class E2BSandbox:
    name = "e2b"
    languages: frozenset[str] = frozenset({"python", "javascript", "typescript", "r", "java", "bash"})

    def __init__(
        self,
        *,
        api_key: str,
        output_limit_bytes: int,
        default_template: str | None = None,
        request_timeout_seconds: float = 30.0,
        api_retries: int | None = None,
    ) -> None:
        self._api_key = api_key
        self._output_limit = output_limit_bytes
        self._default_template = default_template
        self._request_timeout = request_timeout_seconds
        # None: the SDK's default (a few quick retries of 429/502/503/504 on the control plane)
        self._api_retries = api_retries
        self._sessions: dict[str, _Session] = {}
        self._locks: dict[str, _ClientLock] = {}
        self._closed = False

    @property
    def sessions(self) -> int:
        return len(self._sessions)

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
            session = await self._session_for(spec)
            try:
                return await self._execute(session, spec, on_output, started)
            except NotFoundException:
                # The sandbox died under us (E2B's lifetime, a manual kill) before the code ran.
                await self._discard(spec.client_id, session, reason="gone")
                session = await self._session_for(spec)
                try:
                    return await self._execute(session, spec, on_output, started)
                except Exception as exc:
                    raise self._backend_error(exc, spec.client_id) from exc
            except Exception as exc:
                raise self._backend_error(exc, spec.client_id) from exc
            finally:
                if self._sessions.get(spec.client_id) is session:
                    self._arm_reaper(spec.client_id, session, spec.idle_seconds)

    async def close_session(self, client_id: str) -> None:
        """Kill the client's sandbox now (its kernel state is lost)."""
        async with self._client_lock(client_id):
            session = self._sessions.get(client_id)
            if session is not None:
                await self._discard(client_id, session, reason="closed")

    async def aclose(self) -> None:
        self._closed = True
        sessions = list(self._sessions.items())
        self._sessions.clear()
        for _, session in sessions:
            if session.reaper is not None:
                session.reaper.cancel()
        await asyncio.gather(*(self._kill(cid, session, "shutdown") for cid, session in sessions))

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

    async def _session_for(self, spec: RunSpec) -> _Session:
        template = spec.template or self._default_template
        session = self._sessions.get(spec.client_id)
        if session is not None and (session.template != template or session.allow_internet != spec.allow_internet):
            # The policy changed under a live sandbox: start over with the new one.
            await self._discard(spec.client_id, session, reason="policy changed")
            session = None
        lifetime = spec.idle_seconds + int(spec.timeout_seconds) + _LIFETIME_SLACK_SECONDS
        if session is not None:
            if session.reaper is not None:
                session.reaper.cancel()
                session.reaper = None
            try:
                await session.sandbox.set_timeout(lifetime, request_timeout=self._request_timeout)
                return session
            except NotFoundException:
                await self._discard(spec.client_id, session, reason="gone")
            except Exception as exc:
                raise self._backend_error(exc, spec.client_id) from exc
        try:
            sandbox = await AsyncSandbox.create(
                template=template,
                timeout=lifetime,
                metadata={"service": "athenic", "clientId": spec.client_id},
                allow_internet_access=spec.allow_internet,
                api_key=self._api_key,
                request_timeout=self._request_timeout,
                **({} if self._api_retries is None else {"retries": self._api_retries}),
            )
        except Exception as exc:
            raise self._backend_error(exc, spec.client_id) from exc
        log.info("e2b sandbox created", client_id=spec.client_id, sandbox_id=sandbox.sandbox_id,
                 template=template or "default")
        session = _Session(sandbox=sandbox, template=template, allow_internet=spec.allow_internet)
        self._sessions[spec.client_id] = session
        return session

    def _arm_reaper(self, client_id: str, session: _Session, idle_seconds: int) -> None:
        if session.reaper is not None:
            session.reaper.cancel()
        session.idle_seconds = idle_seconds
        session.reaper = asyncio.create_task(self._reap(client_id, session), name=f"e2b-idle-{client_id}")

    async def _reap(self, client_id: str, session: _Session) -> None:
        await asyncio.sleep(session.idle_seconds)
        async with self._client_lock(client_id):
            if self._sessions.get(client_id) is session:
                session.reaper = None
                await self._discard(client_id, session, reason="idle")

    async def _discard(self, client_id: str, session: _Session, *, reason: str) -> None:
        if self._sessions.get(client_id) is session:
            del self._sessions[client_id]
        if session.reaper is not None and session.reaper is not asyncio.current_task():
            session.reaper.cancel()
        await self._kill(client_id, session, reason)

    async def _kill(self, client_id: str, session: _Session, reason: str) -> None:
        try:
            async with asyncio.timeout(_KILL_TIMEOUT_SECONDS):
                await session.sandbox.kill(request_timeout=self._request_timeout)
            log.info("e2b sandbox killed", client_id=client_id, sandbox_id=session.sandbox.sandbox_id, reason=reason)
        except Exception as exc:
            # E2B's own lifetime timer removes it later; nothing for the caller to do.
            log.warning("e2b sandbox kill failed", client_id=client_id, sandbox_id=session.sandbox.sandbox_id,
                        reason=reason, error=str(exc))

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

    @staticmethod
    def _backend_error(exc: BaseException, client_id: str) -> Exception:
        """Map a fault of E2B (not of the user's code) to retryable or terminal."""
        if isinstance(exc, RetryableError | TerminalError):
            return exc
        if isinstance(exc, AuthenticationException):
            log.error("E2B rejected the API key", client_id=client_id, error=str(exc))
            return TerminalError("E2B rejected the API key (check E2B_API_KEY): code could not run")
        if isinstance(exc, TemplateException | InvalidArgumentException):
            log.error("E2B refused the sandbox", client_id=client_id, error=str(exc))
            return TerminalError(f"E2B refused the sandbox: {exc}")
        if isinstance(exc, RateLimitException | ServiceBusyException | E2BTimeout):
            log.warning("E2B busy or slow", client_id=client_id, error=str(exc))
            return RetryableError(f"E2B is busy or slow: {exc}")
        if isinstance(exc, SandboxException):
            status = getattr(exc, "status_code", None)
            if status is None:
                # errors of the code interpreter carry the status only in the text: "400 Bad Request: ..."
                leading = _STATUS_PREFIX.match(str(exc))
                status = int(leading[1]) if leading else None
            if isinstance(status, int) and 400 <= status < 500 and status not in (408, 429):
                log.error("E2B refused the request", client_id=client_id, status=status, error=str(exc))
                return TerminalError(f"E2B refused the request: {exc}")
            log.warning("E2B failed", client_id=client_id, error=str(exc))
            return RetryableError(f"E2B failed: {exc}")
        if isinstance(exc, httpx.HTTPError | OSError):
            log.warning("E2B unreachable", client_id=client_id, error=f"{type(exc).__name__}: {exc}")
            return RetryableError(f"E2B is unreachable or dropped the connection: {type(exc).__name__}: {exc}")
        log.warning("E2B call failed", client_id=client_id, error=f"{type(exc).__name__}: {exc}")
        return RetryableError(f"E2B call failed: {type(exc).__name__}: {exc}")


def _result_formats(result: Any) -> dict[str, Any]:
    """One rich result as a dict keyed by format (text, png as base64, json, html...)."""
    formats: dict[str, Any] = {}
    for name in result.formats():
        value = result[name]
        if name == "chart" and value is not None:
            value = value.to_dict()
        formats[str(name)] = value
    return formats
