"""Bounded capture of one output stream: what the user sees, never more than a cap in memory.

The first part of the stream is kept and forwarded as it arrives; past the cap a short
rolling tail is kept instead (a traceback is printed last, so the end matters), and the
rendered text says how much was left out between the two.
"""

from __future__ import annotations

import codecs
from collections import deque

from athenic.orchestrator.sandbox.base import OutputSink, Stream
from athenic.shared.logging import get_logger

log = get_logger(__name__)

# Said to the user (and to the live stream) where output was left out.
LIMIT_NOTICE = "\n[output limit reached: further output is not shown]\n"


def omitted_marker(count: int) -> str:
    return f"\n[... {count} bytes of output omitted (output limit reached) ...]\n"


class CappedOutput:
    """Keeps the head (up to ``limit - tail``) and a rolling tail of one byte stream."""

    def __init__(self, limit: int) -> None:
        self.tail_limit = min(limit // 4, 16 * 1024)
        self.head_limit = limit - self.tail_limit
        self._head = bytearray()
        self._tail: deque[bytes] = deque()
        self._tail_size = 0
        self.omitted = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    @property
    def truncated(self) -> bool:
        return self.omitted > 0

    def feed(self, data: bytes) -> str:
        """Take a chunk; return the text to forward live ('' once past the head)."""
        room = self.head_limit - len(self._head)
        if room > 0:
            kept = data[:room]
            self._head += kept
            data = data[room:]
            live = self._decoder.decode(kept)
            if data:
                live += self._decoder.decode(b"", final=True) + LIMIT_NOTICE
                self._keep_tail(data)
            return live
        self._keep_tail(data)
        return ""

    def _keep_tail(self, data: bytes) -> None:
        if not data:
            return
        self._tail.append(data)
        self._tail_size += len(data)
        while self._tail_size > self.tail_limit:
            excess = self._tail_size - self.tail_limit
            first = self._tail[0]
            if len(first) <= excess:
                self._tail.popleft()
                self._tail_size -= len(first)
                self.omitted += len(first)
            else:
                self._tail[0] = first[excess:]
                self._tail_size -= excess
                self.omitted += excess

    def text(self) -> str:
        head = bytes(self._head).decode("utf-8", errors="replace")
        if not self.omitted:
            return head + b"".join(self._tail).decode("utf-8", errors="replace")
        tail = b"".join(self._tail)
        # The cut may fall inside a UTF-8 sequence: skip its continuation bytes.
        start = 0
        while start < len(tail) and start < 3 and tail[start] & 0xC0 == 0x80:
            start += 1
        return head + omitted_marker(self.omitted + start) + tail[start:].decode("utf-8", errors="replace")


class CappedText(CappedOutput):
    """The same bound for streams that arrive as text (E2B hands over decoded chunks)."""

    def feed_text(self, text: str) -> str:
        return self.feed(text.encode("utf-8", errors="replace"))


def head_and_tail(text: str, limit: int) -> tuple[str, int]:
    """``text`` cut to about ``limit`` bytes of UTF-8 the way a run's output is: its head, the
    omitted marker, its tail; and how many bytes were left out (0: it fitted, unchanged)."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return text, 0
    capture = CappedOutput(limit)
    capture.feed(data)
    return capture.text(), capture.omitted


# Past its cap a stream is read at most OVERFLOW_READ_BYTES per OVERFLOW_REST_SECONDS (~25 MiB/s):
# what follows only feeds the rolling tail, and the code's writes wait meanwhile, so a run that
# floods its output costs the orchestrator a small, bounded share of a CPU (read at full speed,
# about two thirds of one), and the other conversations it serves do not wait behind it.
OVERFLOW_READ_BYTES = 256 * 1024
OVERFLOW_REST_SECONDS = 0.01


class OverflowPace:
    """When a stream past its cap is due a rest (``due``, told each chunk read)."""

    def __init__(self) -> None:
        self._since_rest = 0

    def due(self, size: int, *, overflowing: bool) -> bool:
        if not overflowing:
            return False
        self._since_rest += size
        if self._since_rest < OVERFLOW_READ_BYTES:
            return False
        self._since_rest = 0
        return True


class OutputForwarder:
    """Hands chunks to the sink; a failing sink stops the progress stream, never the run."""

    def __init__(self, sink: OutputSink | None) -> None:
        self._sink = sink

    async def __call__(self, stream: Stream, text: str) -> None:
        if self._sink is None or not text:
            return
        try:
            await self._sink(stream, text)
        except Exception:
            log.warning("output sink failed; no more output is forwarded for this run", exc_info=True)
            self._sink = None
