"""The file routes: upload a conversation file, list them, download one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.enums import MediaType
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIFormat, OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.params import FromPath, QueryParameter

from athenic.api import problems
from athenic.api.errors import InvalidRequest
from athenic.api.file_service import UserFiles, valid_name
from athenic.api.uploads import read_form, read_raw
from athenic.shared.files import FileInfo

# shown by a client's viewer rather than saved: raster images only (an SVG or HTML could script)
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


class FileList(msgspec.Struct, frozen=True, rename="camel"):
    client_id: str
    files: list[FileInfo]


@dataclass
class UploadOperation(Operation):
    """The upload's body in the OpenAPI document (the handler reads the stream itself)."""

    def __post_init__(self) -> None:
        binary = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
        self.request_body = RequestBody(required=True, description="The file: a form's `file` part, or the raw body "
                                        "(then `?name=` names it)", content={
            "multipart/form-data": OpenAPIMediaType(schema=Schema(
                type=OpenAPIType.OBJECT, properties={"file": binary}, required=["file"])),
            "application/octet-stream": OpenAPIMediaType(schema=binary),
        })


def content_disposition(name: str, content_type: str) -> str:
    """RFC 6266: an ASCII ``filename`` fallback and the exact name as ``filename*`` (RFC 8187)."""
    kind = "inline" if content_type in INLINE_TYPES else "attachment"
    fallback = "".join(ch if " " <= ch <= "~" and ch not in '"\\%' else "_" for ch in name)
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _declared_length(request: Request[Any, Any, Any]) -> int | None:
    value = request.headers.get("content-length")
    return int(value) if value is not None and value.isdigit() else None


NAME_PARAMETER = QueryParameter(description="The file's name (required for a raw body; overrides the "
                           "form part's filename). No path separators, not `.`, `..` or `out`, no control "
                           "characters, at most 255 bytes.")


class FilesController(Controller):
    path = "/api/chat/{client_id:str}/files"
    tags = ["files"]

    @post(
        "/",
        status_code=201,
        summary="Upload a file to the conversation",
        description="The code of the conversation's later runs finds it at `files/<name>` (read-only); a file "
        "of that name is replaced. An unused clientId is claimed, as by a first message. Limits: "
        "`ATHENIC_FILE_MAX_BYTES` per file, `ATHENIC_CONVERSATION_FILES_MAX_BYTES` and "
        "`ATHENIC_CONVERSATION_MAX_FILES` per conversation (413).",
        request_max_body_size=None,  # read as a stream, bounded by the per-file limit (uploads.py)
        operation_class=UploadOperation,
        responses={400: problems.BAD_REQUEST, 401: problems.UNAUTHORIZED, 404: problems.NOT_FOUND,
                   413: problems.FILE_TOO_LARGE, 429: problems.RATE_LIMITED, 503: problems.UNAVAILABLE},
    )
    async def upload(self, client_id: FromPath[str], request: Request[Any, Any, Any], files: NamedDependency[UserFiles],
                     name: Annotated[str | None, NAME_PARAMETER] = None) -> FileInfo:
        service, who = files.service, files.identity
        service.admit(client_id, who, _declared_length(request))
        if name is not None:
            name = valid_name(name)
        limit = service.limits.athenic_file_max_bytes
        media, options = request.content_type
        await service.claim(client_id, who)
        if media == "multipart/form-data":
            boundary = options.get("boundary")
            if not boundary:
                raise InvalidRequest("multipart/form-data needs a boundary in its Content-Type")
            upload = await read_form(request.stream(), boundary, limit)
            name = valid_name(name or upload.filename)
        else:
            name = valid_name(name)
            upload = await read_raw(request.stream(), limit, request.headers.get("content-type"))
        try:
            return await service.store_upload(client_id, name, upload)
        finally:
            upload.close()

    @get(
        "/",
        summary="The conversation's files",
        description="Uploaded files and the files its runs made, by name.",
        responses=problems.CONVERSATION_READ,
    )
    async def list_files(self, client_id: FromPath[str], files: NamedDependency[UserFiles]) -> FileList:
        return FileList(client_id=client_id, files=await files.service.list(client_id, files.identity))

    @get(
        "/{name:str}",
        summary="Download a conversation file",
        description="The bytes, with the type it was stored with, `Content-Disposition` naming it (RFC 6266) "
        "and its SHA-256 as the ETag.",
        media_type=MediaType.TEXT,  # overridden per file; the document lists the real type below
        responses={
            200: ResponseSpec(data_container=bytes, media_type="application/octet-stream",
                              description="The file (its own Content-Type)", generate_examples=False),
            400: problems.BAD_REQUEST, 401: problems.UNAUTHORIZED, 404: problems.NOT_FOUND,
            503: problems.UNAVAILABLE},
    )
    async def download(self, client_id: FromPath[str], name: FromPath[str],
                       files: NamedDependency[UserFiles]) -> Response[bytes]:
        info, data = await files.service.read(client_id, name, files.identity)
        return Response(data, media_type=info.content_type, headers={
            "Content-Disposition": content_disposition(info.name, info.content_type),
            "ETag": f'"{info.sha256}"',
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "private, no-cache",
        })
