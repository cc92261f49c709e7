"""Reading an upload's body without holding it in memory: raw, or the ``file`` part of a form.

The body is spooled (to memory up to ``SPOOL_BYTES``, then to a temporary file) while its
SHA-256 is computed, and reading stops as soon as the file is over the limit: a client sending
a gigabyte costs the limit and a little more, never the gigabyte.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO

from multipart import (  # type: ignore[import-untyped]
    MultipartError,
    MultipartSegment,
    ParserLimitReached,
    PushMultipartParser,
)

from athenic.api.errors import InvalidRequest, PayloadTooLarge
from athenic.shared.files import FileInfo

SPOOL_BYTES = 1024 * 1024
FORM_FIELD = "file"


@dataclass
class Upload:
    body: IO[bytes]
    size: int
    sha256: str
    filename: str | None  # the form part's filename (raw bodies have none)
    content_type: str | None

    def close(self) -> None:
        self.body.close()


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the file is over the {limit} byte limit per file", limit=limit)


class _Spool:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
        self.size = 0
        self.hash = hashlib.sha256()

    def write(self, chunk: bytes | bytearray) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            self.file.close()
            raise too_large(self.limit)
        self.hash.update(chunk)
        self.file.write(chunk)

    def done(self, filename: str | None, content_type: str | None) -> Upload:
        self.file.seek(0)
        return Upload(self.file, self.size, self.hash.hexdigest(), filename, content_type)


async def read_raw(stream: AsyncIterator[bytes], limit: int, content_type: str | None) -> Upload:
    spool = _Spool(limit)
    async for chunk in stream:
        spool.write(chunk)
    return spool.done(None, content_type)


async def read_form(stream: AsyncIterator[bytes], boundary: str, limit: int) -> Upload:
    """The form's ``file`` part; other parts are read past (bounded by the parser's limits)."""
    spool: _Spool | None = None
    found: Upload | None = None
    segment: MultipartSegment | None = None
    try:
        with PushMultipartParser(boundary.encode(), max_segment_count=16, max_segment_size=limit + 1) as parser:
            async for chunk in stream:
                for part in parser.parse(chunk):
                    if isinstance(part, MultipartSegment):
                        segment = part
                        if part.name == FORM_FIELD and found is None:
                            spool = _Spool(limit)
                    elif part:
                        if spool is not None:
                            spool.write(part)
                    elif spool is not None and segment is not None:  # the end of the file part
                        found, spool = spool.done(segment.filename, segment.content_type), None
                if parser.closed:
                    break
            if not parser.closed:
                raise InvalidRequest("the multipart body ends before its closing boundary")
    except BaseException as exc:
        if spool is not None:
            spool.file.close()
        if found is not None:
            found.close()
        if isinstance(exc, ParserLimitReached) and "segment size" in str(exc):
            raise too_large(limit) from None
        if isinstance(exc, MultipartError):
            raise InvalidRequest(f"the body is not valid multipart/form-data: {exc}") from None
        raise
    if found is None:
        raise InvalidRequest(f"the multipart body has no `{FORM_FIELD}` part")
    return found


__all__ = ["FileInfo", "Upload", "read_form", "read_raw"]
