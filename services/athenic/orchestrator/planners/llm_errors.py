"""What a failed call to the LLM endpoint means for the message: retry it later, or give up.

Passing faults (unreachable, timed out, 5xx, 429, 408, 409) are retryable; a rejected key, an
unknown model or a refused request are terminal with a message that names the setting to fix.
Every message is scrubbed of the API key and of credentials in the endpoint's URL.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai

from athenic.orchestrator.errors import RetryableError, TerminalError

RETRYABLE_STATUSES = frozenset({408, 409, 429})


def display_url(url: str) -> str:
    """The URL without any user:password part."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _detail(exc: openai.APIStatusError) -> tuple[str, str | None]:
    """The server's own error message and code, when it sent the usual ``{"error": {...}}``."""
    body: Any = exc.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    if isinstance(body, dict):
        message = body.get("message")
        code = body.get("code")
        return (str(message) if message else exc.message), (str(code) if code else None)
    return exc.message, None


def classify(
    exc: openai.OpenAIError, *, base_url: str, model: str, timeout: float, api_key: str | None
) -> RetryableError | TerminalError:
    where = f"the LLM endpoint {display_url(base_url)}"
    error: RetryableError | TerminalError
    if isinstance(exc, openai.APITimeoutError):
        error = RetryableError(f"{where} did not answer within {timeout:g} s (ATHENIC_LLM_TIMEOUT_SECONDS)")
    elif isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        error = RetryableError(f"cannot reach {where}: {cause or exc}")
    elif isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        detail, code = _detail(exc)
        detail = detail[:300]
        if status in (401, 403):
            error = TerminalError(
                f"{where} rejected the API key (HTTP {status}): check OPENAI_API_KEY. Server said: {detail}"
            )
        elif status == 429 and code == "insufficient_quota":
            error = TerminalError(f"{where} says the account is out of quota (HTTP 429): {detail}")
        elif status in RETRYABLE_STATUSES or status >= 500:
            error = RetryableError(f"{where} answered HTTP {status}: {detail}")
        elif status in (400, 404, 422):
            error = TerminalError(
                f"{where} refused the request for model {model!r} (HTTP {status}): {detail}. "
                "Check ATHENIC_LLM_MODEL and OPENAI_BASE_URL."
            )
        else:
            error = TerminalError(f"{where} answered HTTP {status}: {detail}")
    else:
        # A 200 that is not a chat completion: a proxy page or a half-compatible server.
        error = RetryableError(f"{where} sent something that is not a chat completion: {exc}")
    return _scrubbed(error, api_key)


def _scrubbed(error: RetryableError | TerminalError, api_key: str | None) -> RetryableError | TerminalError:
    text = str(error)
    if api_key and api_key in text:
        return type(error)(text.replace(api_key, "***"))
    return error
