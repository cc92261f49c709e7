"""Conversation files in an E2B sandbox, through envd's filesystem API (``sandbox.files``).

Before a run, the conversation's files are written to ``/home/user/files/`` (the code
interpreter's working directory is ``/home/user``, so the code opens ``files/<name>``); a file the
sandbox already holds with the same SHA-256 (and, as one listing shows, still at its size) is
not sent again (a sandbox lives across a conversation's messages), and one the conversation no
longer has is removed. After the run,
what the code left in ``files/out/`` is copied down into the workspace's host directory (at most
the run's file count, each at most the per-file size; the rest is named in ``not_kept``) and
removed from the sandbox, so the next run does not bring it back twice.

E2B gives the code the sandbox's whole filesystem: unlike the local backend, the inputs are
not read-only there (changing them changes only the sandbox's copy).
"""

from __future__ import annotations

import contextlib
import os
import weakref
from typing import Any

from e2b import FileType
from e2b.exceptions import FileNotFoundException

from athenic.orchestrator.sandbox.files import Workspace
from athenic.shared.files import BadFileName, check_name

HOME = "/home/user"
FILES = f"{HOME}/files"
OUT = f"{FILES}/out"

# per sandbox object: name -> SHA-256 of what it holds under files/
_staged: weakref.WeakKeyDictionary[Any, dict[str, str]] = weakref.WeakKeyDictionary()


def _mib(count: int) -> str:
    return f"{count / (1024 * 1024):.1f} MiB"


async def _sizes(sandbox: Any, path: str) -> dict[str, int]:
    """Regular files in the sandbox's ``path`` by name and size ({} when it is not there)."""
    try:
        entries = await sandbox.files.list(path)
    except FileNotFoundException:
        return {}
    return {str(e.name): int(e.size) for e in entries if e.type == FileType.FILE}


async def stage(sandbox: Any, workspace: Workspace | None) -> None:
    if workspace is None:
        return
    held = _staged.setdefault(sandbox, {})
    # what the code did to its copies since: a file it removed or resized is written again
    present = await _sizes(sandbox, FILES)
    wanted = {item.name: item for item in workspace.inputs}
    for name in list(held):
        if name in wanted and present.get(name) != wanted[name].size:
            del held[name]
    for name in sorted(set(held) - set(wanted)):
        with contextlib.suppress(FileNotFoundException):
            await sandbox.files.remove(f"{FILES}/{name}")
        del held[name]
    for item in workspace.inputs:
        if held.get(item.name) == item.sha256:
            continue
        await sandbox.files.write(f"{FILES}/{item.name}", await workspace.read(item.name))
        held[item.name] = item.sha256
    await sandbox.files.make_dir(OUT)  # False when it is there already


async def collect(sandbox: Any, workspace: Workspace | None) -> None:
    if workspace is None:
        return
    copied = 0
    try:
        entries = await sandbox.files.list(OUT)
    except FileNotFoundException:  # the code removed files/out: it left nothing
        return
    for entry in entries:
        name = str(entry.name)
        why = None
        try:
            check_name(name)
        except BadFileName as exc:
            why = str(exc)
        if why is None and entry.type != FileType.FILE:
            why = "not a regular file (directories and links are not kept)"
        elif why is None and int(entry.size) > workspace.max_file_bytes:
            why = f"{_mib(int(entry.size))}, over the {_mib(workspace.max_file_bytes)} limit per file"
        elif why is None and copied >= workspace.max_files:
            why = f"over the {workspace.max_files} files a run may keep"
        if why is None:
            data = await sandbox.files.read(f"{OUT}/{name}", format="bytes")
            if len(data) > workspace.max_file_bytes:  # grown since it was listed
                why = f"over the {_mib(workspace.max_file_bytes)} limit per file"
            else:
                with open(os.path.join(workspace.out_dir, name), "wb") as handle:  # noqa: ASYNC230 (local)
                    handle.write(data)
                copied += 1
        if why is not None:
            workspace.not_kept.append(f"{name!r}: {why}" if not name.isprintable() else f"{name}: {why}")
        with contextlib.suppress(FileNotFoundException):
            await sandbox.files.remove(f"{OUT}/{name}")
