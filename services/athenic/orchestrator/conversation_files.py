"""The conversation's files around one answer's runs: staged before, kept after.

Before a run, ``workspace`` lists the conversation's files for the backend (sandbox/files.py).
After it, ``collect`` keeps as conversation files what the run made: the files the code left in
``files/out/`` and every image or other file result (png, jpeg, svg, pdf) of either backend.
Each result then lists its file (``"files": [FileRef]``) instead of holding base64, and the
execution lists them all (``files``) and says what it did not keep (``filesNotKept``): over the
per-file size, over the files a run may keep, over the conversation's limits, a bad name, or a
store that failed. So the response record never holds a file's bytes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import stat
from dataclasses import dataclass
from typing import IO, Any

import msgspec
import nats.errors

from athenic.orchestrator.errors import RetryableError
from athenic.orchestrator.sandbox.files import StagedFile, Workspace
from athenic.shared.files import BadFileName, FileInfo, FileStore, check_name, content_type_of, reference
from athenic.shared.logging import get_logger
from athenic.shared.messages import Execution, FileRef
from athenic.shared.settings import FileSettings

log = get_logger(__name__)

# result formats that are files: (extension, media type, base64-encoded)
FILE_RESULTS: dict[str, tuple[str, str, bool]] = {
    "png": ("png", "image/png", True),
    "jpeg": ("jpg", "image/jpeg", True),
    "svg": ("svg", "image/svg+xml", False),
    "pdf": ("pdf", "application/pdf", True),
}
STORE_FAULTS = (nats.errors.Error, TimeoutError, OSError)


def mib(count: int) -> str:
    return f"{count / (1024 * 1024):.1f} MiB" if count >= 1024 * 1024 else f"{count / 1024:.1f} KiB"


@dataclass
class _Made:
    name: str
    content_type: str
    size: int
    data: bytes | None = None  # a result's bytes
    path: str | None = None  # a file in files/out
    slot: int | None = None  # the result it came from


class ConversationFiles:
    def __init__(self, store: FileStore, limits: FileSettings, client_id: str, request_id: str) -> None:
        self.store = store
        self.limits = limits
        self.client_id = client_id
        self.request_id = request_id
        self._present: list[FileInfo] | None = None
        self._listing: asyncio.Task[list[FileInfo]] | None = None

    def look_ahead(self) -> None:
        """Start listing the files for a run expected soon (``available`` then awaits it)."""
        if self._present is None and self._listing is None:
            self._listing = asyncio.create_task(self._list(), name=f"files-{self.client_id}")
            self._listing.add_done_callback(lambda task: task.cancelled() or task.exception())  # (seen by its run)

    async def _list(self) -> list[FileInfo]:
        try:
            return await self.store.list(self.client_id)
        except STORE_FAULTS as exc:
            raise RetryableError(f"the conversation's files could not be listed: {exc}") from exc

    async def available(self) -> list[FileInfo]:
        """The conversation's files now (read once per answer, updated by what its runs keep)."""
        if self._present is None:
            listing, self._listing = self._listing, None
            self._present = await (listing if listing is not None else self._list())
        return self._present

    async def workspace(self) -> Workspace:
        present = await self.available()

        async def fetch(name: str, into: IO[bytes]) -> None:
            try:
                found = await self.store.read(self.client_id, name, into)
            except STORE_FAULTS as exc:
                raise RetryableError(f"the conversation file {name!r} could not be read: {exc}") from exc
            if found is None:  # removed (or expired) since it was listed: staged empty
                log.warning("conversation file gone before it was staged", client_id=self.client_id)

        return Workspace(inputs=[StagedFile(f.name, f.size, f.sha256) for f in present], fetch=fetch,
                         max_file_bytes=self.limits.athenic_file_max_bytes,
                         max_files=self.limits.athenic_run_max_files)

    async def collect(self, execution: Execution, workspace: Workspace | None, run: int) -> Execution:
        """``execution`` with its files kept, its results referencing them and no bytes left in it;
        the workspace is removed."""
        try:
            return await self._collect(execution, workspace, run)
        finally:
            if workspace is not None and workspace.made:
                # (in a thread, as the listing: a run may leave thousands of entries)
                await asyncio.to_thread(workspace.cleanup)

    async def _collect(self, execution: Execution, workspace: Workspace | None, run: int) -> Execution:
        not_kept = list(workspace.not_kept) if workspace is not None else []
        made = (await asyncio.to_thread(self._out_files, workspace, not_kept)
                if workspace is not None and workspace.made else [])
        results = self._result_files(execution.results, run, made, not_kept)
        kept: list[FileRef] = []
        for item in self._within_limits(made, not_kept):
            ref = await self._keep(item, not_kept)
            if ref is None:
                continue
            kept.append(ref)
            if item.slot is not None:
                results[item.slot].setdefault("files", []).append(msgspec.to_builtins(ref))
        return msgspec.structs.replace(
            execution, results=[r for r in results if r], files=[*execution.files, *kept],
            files_not_kept=[*execution.files_not_kept, *not_kept])

    def _out_files(self, workspace: Workspace, not_kept: list[str]) -> list[_Made]:
        made = []
        try:
            entries = sorted(os.scandir(workspace.out_dir), key=lambda entry: entry.name)
        except OSError:
            return []
        for entry in entries:
            if not entry.is_file(follow_symlinks=False):
                not_kept.append(f"{entry.name}: not a regular file (directories and links are not kept)")
                continue
            try:
                name = check_name(entry.name)
            except BadFileName as exc:
                not_kept.append(f"{entry.name!r}: {exc}")
                continue
            size = entry.stat(follow_symlinks=False).st_size
            made.append(_Made(name, content_type_of(name, None), size, path=entry.path))
        return made

    def _result_files(self, results: list[dict[str, Any]], run: int, made: list[_Made],
                      not_kept: list[str]) -> list[dict[str, Any]]:
        """The results without their file formats; those become ``made`` files named after the run."""
        stripped: list[dict[str, Any]] = []
        prefix = f"result-{self.request_id[:8]}-{run}"
        for index, result in enumerate(results, 1):
            slot = len(stripped)
            stripped.append({k: v for k, v in result.items() if k not in FILE_RESULTS})
            for key, (extension, media, encoded) in FILE_RESULTS.items():
                value = result.get(key)
                if not isinstance(value, str):
                    continue
                name = f"{prefix}-{index}.{extension}"
                if (len(value) * 3 // 4 if encoded else len(value)) > self.limits.athenic_file_max_bytes:
                    not_kept.append(f"{name}: over the {mib(self.limits.athenic_file_max_bytes)} limit per file")
                    continue
                try:
                    data = base64.b64decode(value, validate=True) if encoded else value.encode()
                except (binascii.Error, ValueError):
                    not_kept.append(f"{name}: the {key} result is not valid base64")
                    continue
                made.append(_Made(name, media, len(data), data=data, slot=slot))
        return stripped

    def _within_limits(self, made: list[_Made], not_kept: list[str]) -> list[_Made]:
        present = {item.name: item.size for item in self._present or []}
        chosen: list[_Made] = []
        for item in made:
            others = {name: size for name, size in present.items() if name != item.name}
            why = None
            if item.size > self.limits.athenic_file_max_bytes:
                why = f"{mib(item.size)}, over the {mib(self.limits.athenic_file_max_bytes)} limit per file"
            elif len(chosen) >= self.limits.athenic_run_max_files:
                why = f"over the {self.limits.athenic_run_max_files} files a run may keep"
            elif sum(others.values()) + item.size > self.limits.athenic_conversation_files_max_bytes:
                why = (f"the conversation's files would be over its "
                       f"{mib(self.limits.athenic_conversation_files_max_bytes)} limit")
            elif len(others) + 1 > self.limits.athenic_conversation_max_files:
                why = f"the conversation has its {self.limits.athenic_conversation_max_files} files already"
            if why is not None:
                not_kept.append(f"{item.name}: {why}")
                continue
            present[item.name] = item.size
            chosen.append(item)
        return chosen

    async def _keep(self, item: _Made, not_kept: list[str]) -> FileRef | None:
        try:
            if item.data is not None:
                info = await self.store.put(self.client_id, item.name, item.data, item.content_type)
            else:
                assert item.path is not None
                with _open_regular(item.path) as handle:
                    info = await self.store.put(self.client_id, item.name, handle, item.content_type)
        except STORE_FAULTS as exc:
            log.warning("a file the run made could not be stored", client_id=self.client_id,
                        error=str(exc) or type(exc).__name__)
            not_kept.append(f"{item.name}: could not be stored ({type(exc).__name__})")
            return None
        if self._present is not None:
            self._present = [f for f in self._present if f.name != info.name] + [info]
        return reference(info)


def _open_regular(path: str) -> IO[bytes]:
    """The file at ``path``, refusing a link or anything but a regular file put there meanwhile."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{os.path.basename(path)} is not a regular file")
    return os.fdopen(fd, "rb")
