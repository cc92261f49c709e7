"""OpenAPI descriptions of the problem-details answers, shared by every route."""

from __future__ import annotations

from typing import Final

from litestar.openapi.datastructures import ResponseSpec

from athenic.api.schemas import Problem, Ready


def problem(description: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=Problem, media_type="application/problem+json", description=description,
        generate_examples=False,
    )


BAD_REQUEST = problem("Bad JSON, a missing, empty or non-string `message`, a bad clientId, `x-on-busy`, "
                      "Idempotency-Key, `limit` or `before`")
UNAUTHORIZED = problem("Auth is on and the bearer token is missing or invalid")
NOT_FOUND = problem("Unknown clientId (or one owned by another user)")
TOO_LARGE = problem("The body or the message is over the limit")
FILE_TOO_LARGE = problem("The file is over the per-file limit, or the conversation's files would be over its "
                         "limit (bytes or count)")
RATE_LIMITED = problem("Over the rate limit; see Retry-After")
BUSY = problem("`x-on-busy: reject` and an earlier message of the conversation is still being answered: "
               "nothing was stored")
KEY_REUSED = problem("The Idempotency-Key was used for another message")
NOTHING_RUNNING = problem("Nothing is running for this clientId")
UNAVAILABLE = problem("The broker cannot take the message: it was NOT accepted; retry later")
NOT_READY = ResponseSpec(data_container=Ready, description="The broker is not connected yet")

# What a route that reads one conversation may answer besides its success: its errors, once.
CONVERSATION_READ: Final[dict[int, ResponseSpec]] = {400: BAD_REQUEST, 401: UNAUTHORIZED, 404: NOT_FOUND,
                                                     503: UNAVAILABLE}
