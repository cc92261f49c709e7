"""The api's domain errors, and the one map from every exception to RFC 9457 problem details
(``PROBLEM_MAP``, which app.py hands to Litestar's problem-details plugin).

Handlers raise these; none builds error JSON by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Final

from litestar.exceptions import HTTPException, ValidationException
from litestar.plugins.problem_details import ProblemDetailsException

from athenic.shared.logging import get_logger

log = get_logger(__name__)


class ApiError(Exception):
    """A failure the client is told about: its ``status`` and ``title`` are the problem's."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"

    def __init_subclass__(cls, *, status: int | None = None, title: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.status = cls.status if status is None else status  # a subclass of a subclass may keep its parent's
        cls.title = cls.title if title is None else title

    def __init__(self, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers
        self.extra = extra


class InvalidRequest(ApiError, status=400, title="Invalid request"):
    """Bad JSON, a bad or missing field, header or parameter."""


class Unauthorized(ApiError, status=401, title="Unauthorized"):
    """Auth is on and the token is missing, invalid or expired."""


class NotFound(ApiError, status=404, title="Not found"):
    """No such conversation (or one another user owns), file or device."""


class Conflict(ApiError, status=409, title="Conflict"):
    """The conversation is busy (``x-on-busy: reject``), or nothing runs to cancel."""


class PayloadTooLarge(ApiError, status=413, title="Payload too large"):
    """A body, file or conversation over its limit."""


class Unprocessable(ApiError, status=422, title="Unprocessable content"):
    """An ``Idempotency-Key`` reused for another request."""


class RateLimited(ApiError, status=429, title="Too many requests"):
    """Over a rate limit (``Retry-After`` says when to try again)."""


class BrokerUnavailable(ApiError, status=503, title="Service unavailable"):
    """The broker cannot take or give the data now: nothing was accepted."""


def to_problem(exc: ApiError) -> ProblemDetailsException:
    return ProblemDetailsException(
        status_code=exc.status,
        title=exc.title,
        detail=exc.detail,
        headers=exc.headers,
        extra=exc.extra or None,
    )


def _validation_problem(exc: ValidationException) -> ProblemDetailsException:
    """Litestar's body/parameter validation failures, said plainly."""
    items = [item for item in exc.extra if isinstance(item, dict)] if isinstance(exc.extra, list) else []
    reasons = "; ".join(str(item.get("message")) for item in items) or str(exc.detail)
    if any(item.get("source") == "body" or item.get("key") == "data" for item in items) or not items:
        if "decode" in reasons.lower() or "json" in reasons.lower() or "malformed" in reasons.lower():
            detail = f"the body is not valid JSON ({reasons})"
        else:
            detail = f'the body must be a JSON object {{"message": "<non-empty string>"}} ({reasons})'
    else:
        detail = "; ".join(f"{item.get('key')}: {item.get('message')}" for item in items)
    return ProblemDetailsException(status_code=400, title="Invalid request", detail=detail)


def _http_problem(exc: HTTPException) -> ProblemDetailsException:
    return ProblemDetailsException(
        status_code=exc.status_code, title=exc.detail, detail=exc.detail, headers=exc.headers
    )


def _unexpected_problem(exc: Exception) -> ProblemDetailsException:
    log.exception("unhandled error", exc_info=exc)
    return ProblemDetailsException(status_code=500, title="Internal error",
                                   detail="an unexpected error occurred; it has been logged")


PROBLEM_MAP: Final[dict[type[Any], Callable[[Any], ProblemDetailsException]]] = {
    ApiError: to_problem,
    ValidationException: _validation_problem,
    HTTPException: _http_problem,
    Exception: _unexpected_problem,
}
