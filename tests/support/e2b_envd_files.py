"""The E2B stand-in's filesystem: envd's ``/files`` HTTP routes and its Connect ``Filesystem`` RPCs.

What the SDK (``sandbox.files``) calls, as envd answers it:

- ``GET /files?path=&username=`` the file's bytes (404 when absent);
- ``POST /files?path=&username=`` a multipart body of ``file`` parts (envd < 0.5.7, as the
  stand-in reports) or an ``application/octet-stream`` body; answers ``[{"name","type","path"}]``;
- ``POST /filesystem.Filesystem/{ListDir,Remove,MakeDir,Stat}`` with Connect's JSON codec
  (proto3 JSON: ``{"path": ..., "depth": 1}``); errors as Connect JSON ``{"code","message"}``.

Each sandbox has its own root directory on the host, holding ``/home/user`` (the kernel's working
directory, as in E2B); a path is resolved inside that root only, never above it. Every call is
recorded (``files_calls``) so tests can see what was written, read and skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

HOME = "/home/user"


@dataclass
class SandboxFiles:
    root: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="e2b-standin-"))

    def __post_init__(self) -> None:
        os.makedirs(self.host(HOME), exist_ok=True)

    @property
    def home(self) -> str:
        return self.host(HOME)

    def host(self, path: str) -> str:
        """The host path of a sandbox path (relative ones are from /home/user), confined to the root."""
        absolute = os.path.normpath(os.path.join(HOME, path))
        resolved = os.path.realpath(os.path.join(self.root, absolute.lstrip("/")))
        if os.path.commonpath([resolved, os.path.realpath(self.root)]) != os.path.realpath(self.root):
            raise web.HTTPForbidden(text="path outside the sandbox")
        return resolved

    def remove_all(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _connect_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


def _entry(files: SandboxFiles, path: str) -> dict[str, Any]:
    host = files.host(path)
    info = os.lstat(host)
    kind = ("FILE_TYPE_DIRECTORY" if stat.S_ISDIR(info.st_mode) else
            "FILE_TYPE_SYMLINK" if stat.S_ISLNK(info.st_mode) else "FILE_TYPE_FILE")
    return {"name": os.path.basename(host), "type": kind, "path": os.path.normpath(os.path.join(HOME, path)),
            "size": str(info.st_size), "mode": info.st_mode & 0o777, "permissions": stat.filemode(info.st_mode),
            "owner": "user", "group": "user",
            "modifiedTime": datetime.fromtimestamp(info.st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


class EnvdFiles:
    """The routes; ``lookup`` finds a request's sandbox files (by its E2b-Sandbox-Id header) or None."""

    def __init__(self, lookup: Callable[[web.Request], SandboxFiles | None]) -> None:
        self.lookup = lookup
        self.files_calls: list[tuple[str, str]] = []  # (operation, sandbox path)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/files", self._download)
        app.router.add_post("/files", self._upload)
        app.router.add_post("/filesystem.Filesystem/{method}", self._rpc)

    def _files(self, request: web.Request) -> SandboxFiles:
        found = self.lookup(request)
        if found is None:
            raise web.HTTPNotFound(text="sandbox not found")
        return found

    async def _download(self, request: web.Request) -> web.StreamResponse:
        files = self._files(request)
        path = request.query.get("path", "")
        self.files_calls.append(("read", path))
        host = files.host(path)
        if not os.path.isfile(host):
            return web.json_response({"code": 404, "message": f"path '{path}' does not exist"}, status=404)
        return web.FileResponse(host, headers={"Content-Type": "application/octet-stream"})

    async def _upload(self, request: web.Request) -> web.Response:
        files = self._files(request)
        written = []
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                path = request.query.get("path") or getattr(part, "filename", None) or ""
                written.append(await self._write(files, path, await part.read()))  # type: ignore[union-attr]
        else:
            written.append(await self._write(files, request.query.get("path", ""), await request.read()))
        return web.json_response(written)

    async def _write(self, files: SandboxFiles, path: str, data: bytes | bytearray) -> dict[str, str]:
        self.files_calls.append(("write", path))
        host = files.host(path)
        os.makedirs(os.path.dirname(host), exist_ok=True)
        with open(host, "wb") as handle:
            handle.write(data)
        return {"name": os.path.basename(host), "type": "file", "path": os.path.normpath(os.path.join(HOME, path))}

    async def _rpc(self, request: web.Request) -> web.Response:
        files = self._files(request)
        method = request.match_info["method"]
        body = await request.json()
        path = str(body.get("path", ""))
        self.files_calls.append((method, path))
        host = files.host(path)
        if method == "MakeDir":
            if os.path.isdir(host):
                return _connect_error(409, "already_exists", f"directory '{path}' already exists")
            os.makedirs(host)
            return web.json_response({"entry": _entry(files, path)})
        if not os.path.lexists(host):
            return _connect_error(404, "not_found", f"path '{path}' does not exist")
        if method == "ListDir":
            if not os.path.isdir(host):
                return _connect_error(400, "invalid_argument", f"path '{path}' is not a directory")
            names = sorted(os.listdir(host))
            return web.json_response({"entries": [_entry(files, os.path.join(path, name)) for name in names]})
        if method == "Remove":
            if os.path.isdir(host) and not os.path.islink(host):
                shutil.rmtree(host)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(host)
            return web.json_response({})
        if method == "Stat":
            return web.json_response({"entry": _entry(files, path)})
        return _connect_error(501, "unimplemented", f"{method} is not in the stand-in")
