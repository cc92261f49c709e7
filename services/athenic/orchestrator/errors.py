"""Every failure while answering a message is either retryable or terminal.

Retryable: the message is redelivered with back-off (nak with a delay) until the consumer's
last delivery, when a ``failed`` answer is written. Terminal: a ``failed`` answer is written
at once and the message is terminated; retrying would not help (a bad key, a bad request,
a record NATS refuses for its size).
"""

import nats.errors
import nats.js.errors


class RetryableError(Exception):
    """A passing fault: the broker, E2B or the LLM endpoint was unreachable, slow or busy."""


class TerminalError(Exception):
    """A fault retrying cannot fix; its message is shown to the user as the failed answer."""


class QuotaExceeded(TerminalError):
    """The tenant's sandbox policy says Reject and the quota is used up."""


# JetStream's JSStreamMessageExceedsMaximumErr: the stream (a KV bucket) refuses a value this large.
_STREAM_MESSAGE_TOO_LARGE = 10054


def refused_as_too_large(exc: BaseException) -> bool:
    """NATS refused a write for its size: the same write can never succeed, so it is never retried."""
    if isinstance(exc, nats.errors.MaxPayloadError):
        return True
    return isinstance(exc, nats.js.errors.APIError) and (
        exc.err_code == _STREAM_MESSAGE_TOO_LARGE or "exceeds maximum" in (exc.description or ""))
