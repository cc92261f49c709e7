"""E2B's faults (not the user's code's) as retryable or terminal errors of the orchestrator."""

from __future__ import annotations

import re

import httpx
from e2b import (
    AuthenticationException,
    InvalidArgumentException,
    RateLimitException,
    SandboxException,
    TemplateException,
)
from e2b import TimeoutException as E2BTimeout
from e2b.exceptions import ServiceBusyException

from athenic.orchestrator.errors import RetryableError, TerminalError
from athenic.shared.logging import get_logger

log = get_logger(__name__)

_STATUS_PREFIX = re.compile(r"^(\d{3})\b")


def backend_error(exc: BaseException, client_id: str) -> Exception:
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
