"""Every failure while answering a message is either retryable or terminal.

Retryable: the message is redelivered with back-off (nak with a delay) until the consumer's
last delivery, when a ``failed`` answer is written. Terminal: a ``failed`` answer is written
at once and the message is terminated; retrying would not help (a bad key, a bad request).
"""


class RetryableError(Exception):
    """A passing fault: the broker, E2B or the LLM endpoint was unreachable, slow or busy."""


class TerminalError(Exception):
    """A fault retrying cannot fix; its message is shown to the user as the failed answer."""


class QuotaExceeded(TerminalError):
    """The tenant's sandbox policy says Reject and the quota is used up."""
