"""The api's domain errors, mapped to RFC 9457 problem details in one place (app.py).

Handlers raise these; none builds error JSON by hand.
"""

from __future__ import annotations

from typing import Any, ClassVar

from litestar.plugins.problem_details import ProblemDetailsException


class ApiError(Exception):
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers
        self.extra = extra


class InvalidRequest(ApiError):
    status = 400
    title = "Invalid request"


class PayloadTooLarge(ApiError):
    status = 413
    title = "Payload too large"


class Unauthorized(ApiError):
    status = 401
    title = "Unauthorized"


class NotFound(ApiError):
    status = 404
    title = "Not found"


class Conflict(ApiError):
    status = 409
    title = "Conflict"


class Unprocessable(ApiError):
    status = 422
    title = "Unprocessable content"


class RateLimited(ApiError):
    status = 429
    title = "Too many requests"


class BrokerUnavailable(ApiError):
    status = 503
    title = "Service unavailable"


def to_problem(exc: ApiError) -> ProblemDetailsException:
    return ProblemDetailsException(
        status_code=exc.status,
        title=exc.title,
        detail=exc.detail,
        headers=exc.headers,
        extra=exc.extra or None,
    )
