"""Conversation files: what a name may be, and how they are kept in the NATS Object Store.

Both services use this: the api for uploads and downloads, the orchestrator to stage files into
a sandbox and to keep what a run made. One Object Store bucket (``names.FILES_BUCKET``) holds
every conversation's files as objects named ``<clientId>/<name>``; the bucket's TTL is the
conversation log's retention, so a file lives as long as the turns that could mention it. The
response record only ever holds references (``FileRef``): bytes never reach KV (the KV index
``names.FILE_INDEX_BUCKET`` holds each file's name, size, digest and type, to list one
conversation's files without reading the whole bucket).
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
import unicodedata
from typing import IO, Final

import msgspec
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import ObjectInfo, ObjectMeta
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from athenic.shared import kv, names
from athenic.shared.messages import FileRef

NAME_MAX_BYTES: Final = 255
# the directory a run leaves its results in: no input file may take its name
RESERVED_NAMES: Final = frozenset({".", "..", "out"})
_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,127}$")
_CONTENT_TYPE_HEADER: Final = "Content-Type"
_DIGEST_PREFIX: Final = "SHA-256="
GENERIC_TYPE: Final = "application/octet-stream"


class BadFileName(ValueError):
    """A file name a conversation cannot hold; the message says why."""


class FileInfo(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A conversation file as the routes describe it."""

    name: str
    size: int
    sha256: str
    content_type: str
    url: str
    modified_at: str | None = None


def check_name(name: str) -> str:
    """``name`` if a conversation file may have it, else ``BadFileName`` saying why."""
    if not name:
        raise BadFileName("the file name must not be empty")
    if len(name.encode()) > NAME_MAX_BYTES:
        raise BadFileName(f"the file name must be at most {NAME_MAX_BYTES} bytes (UTF-8)")
    if "/" in name or "\\" in name:
        raise BadFileName("the file name must not contain a path separator (/ or \\)")
    if name in RESERVED_NAMES:
        raise BadFileName(f"the file name must not be {name!r} ('out' is where runs leave their results)")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in name):
        raise BadFileName("the file name must not contain control or format characters")
    if name != name.strip():
        raise BadFileName("the file name must not start or end with white space")
    return name


def content_type_of(name: str, declared: str | None) -> str:
    """The declared media type when it is a plain ``type/subtype``, else a guess from the name."""
    if declared:
        bare = declared.split(";", 1)[0].strip().lower()
        if _CONTENT_TYPE.fullmatch(bare) and bare != GENERIC_TYPE:
            return bare
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or GENERIC_TYPE


def object_name(client_id: str, name: str) -> str:
    return f"{names.checked(client_id)}/{check_name(name)}"


def sha256_hex(info: ObjectInfo) -> str:
    digest = (info.digest or "").removeprefix(_DIGEST_PREFIX).removeprefix(_DIGEST_PREFIX.lower())
    try:
        return base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4)).hex()
    except (binascii.Error, ValueError):
        return ""


def describe(client_id: str, info: ObjectInfo) -> FileInfo:
    name = info.name.split("/", 1)[1]
    headers = info.headers or {}
    declared = headers.get(_CONTENT_TYPE_HEADER)
    content_type = declared[0] if isinstance(declared, list) and declared else declared
    return FileInfo(name=name, size=info.size or 0, sha256=sha256_hex(info),
                    content_type=str(content_type or content_type_of(name, None)),
                    url=names.file_url(client_id, name), modified_at=info.mtime or None)


def reference(info: FileInfo) -> FileRef:
    return FileRef(name=info.name, size=info.size, content_type=info.content_type, url=info.url)


file_info_decoder = msgspec.json.Decoder(FileInfo)


class FileStore:
    """The conversations' files: bytes in one Object Store bucket, metadata in a KV index.

    The Object Store lists only a whole bucket (its objects' names are base64 in the subjects,
    which no filter narrows to one conversation); the index lists one conversation's keys
    ``<clientId>.*``: one direct get says whether any key matches (most conversations have
    none, and that is the only request then); else its stream says which, and each is read
    (``kv.live_values``). A file is indexed after its bytes are stored, so a listed file can
    always be read; one whose indexing failed is readable but not listed until written again.
    """

    def __init__(self, store: ObjectStore, index: KeyValue, js: JetStreamContext,
                 index_bucket: str = names.FILE_INDEX_BUCKET) -> None:
        self.store = store
        self.index = index
        self.js = js
        self.index_bucket = index_bucket

    async def list(self, client_id: str) -> list[FileInfo]:
        """The conversation's files, by name."""
        stored = await kv.live_values(self.js, self.index, self.index_bucket, f"{client_id}.*")
        return sorted((file_info_decoder.decode(value) for value in stored.values()), key=lambda item: item.name)

    async def info(self, client_id: str, name: str) -> FileInfo | None:
        try:
            found = await self.store.get_info(object_name(client_id, name))
        except nats.js.errors.ObjectNotFoundError:
            return None
        return describe(client_id, found)

    async def read(self, client_id: str, name: str, into: IO[bytes] | None = None) -> tuple[FileInfo, bytes] | None:
        """The file and its bytes (written to ``into`` instead when given); None when absent."""
        try:
            result = await self.store.get(object_name(client_id, name), writeinto=into)  # type: ignore[arg-type]
        except nats.js.errors.ObjectNotFoundError:
            return None
        return describe(client_id, result.info), bytes(result.data or b"")

    async def put(self, client_id: str, name: str, data: bytes | IO[bytes], content_type: str) -> FileInfo:
        meta = ObjectMeta(name=object_name(client_id, name), headers={_CONTENT_TYPE_HEADER: [content_type]})
        stored = describe(client_id, await self.store.put(meta.name or "", data, meta=meta))  # type: ignore[arg-type]
        await self.index.put(names.file_index_key(client_id, name), msgspec.json.encode(stored))
        return stored


__all__ = ["BadFileName", "FileInfo", "FileRef", "FileStore", "check_name", "content_type_of"]
