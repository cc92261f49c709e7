"""PNG figures a local run hands back, read from a pipe the sandbox writes to.

The sandbox's matplotlib backend (sandbox_python/athenic_sandbox_backend.py) writes each figure as
a 4-byte big-endian length and the PNG bytes; a length of 0 marks a figure it left out. The
other end is untrusted code, which can write anything to that pipe: nothing here believes it.
At most ``max_images`` images and ``max_bytes`` bytes of them are kept (memory stays bounded
whatever arrives; the rest is read and thrown away, so the writer never blocks on a full
pipe), and an image is kept only when it starts like a PNG (signature, then an IHDR chunk).
Everything else counts as a dropped image, which the execution reports. Past ``MAX_DROPPED``
dropped frames the rest of the stream is thrown away unparsed: a flood of empty frames (four
bytes each) would otherwise cost a turn of this loop per four bytes, a CPU of the orchestrator.
"""

from __future__ import annotations

import base64
import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_HEADER = 4
# signature, IHDR length and type, width, height
_PNG_HEAD = len(PNG_SIGNATURE) + 8 + 8
# more figures than any plot loop shows: past them, the stream is not parsed any more
MAX_DROPPED = 1000


class FigureCollector:
    def __init__(self, *, max_images: int, max_bytes: int) -> None:
        self._max_images = max_images
        self._max_bytes = max_bytes
        self._header = b""
        self._remaining = 0  # bytes of the current frame still to come
        self._frame: bytearray | None = None  # None while skipping a frame we will not keep
        self._kept_bytes = 0
        self.images: list[bytes] = []
        self.dropped = 0

    def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view and self.dropped < MAX_DROPPED:
            if self._remaining == 0:
                need = _HEADER - len(self._header)
                self._header += bytes(view[:need])
                view = view[need:]
                if len(self._header) == _HEADER:
                    self._start(struct.unpack(">I", self._header)[0])
                    self._header = b""
                continue
            take = view[: self._remaining]
            view = view[len(take):]
            self._remaining -= len(take)
            if self._frame is not None:
                self._frame += take
            if self._remaining == 0:
                self._end()

    def finish(self) -> None:
        """The pipe is closed: a frame cut short is a dropped image (counted once)."""
        if self.dropped < MAX_DROPPED and (self._header or (self._remaining and self._frame is not None)):
            self.dropped += 1
        self._header, self._remaining, self._frame = b"", 0, None

    def results(self) -> list[dict[str, str]]:
        """The kept images as E2B reports rich results: one dict per result, keyed by format."""
        return [{"png": base64.b64encode(png).decode("ascii"), "text": describe_png(png) or ""} for png in self.images]

    def _start(self, length: int) -> None:
        if length == 0:
            self.dropped += 1
            return
        self._remaining = length
        fits = (len(self.images) < self._max_images
                and self._kept_bytes + length <= self._max_bytes)
        self._frame = bytearray() if fits else None
        if not fits:
            self.dropped += 1

    def _end(self) -> None:
        frame, self._frame = self._frame, None
        if frame is None:
            return
        png = bytes(frame)
        if describe_png(png) is None:
            self.dropped += 1
            return
        self.images.append(png)
        self._kept_bytes += len(png)


def describe_png(data: bytes) -> str | None:
    """``<Figure WxH px>`` when ``data`` starts like a PNG, else None."""
    if len(data) < _PNG_HEAD or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return f"<Figure {width}x{height} px>"
