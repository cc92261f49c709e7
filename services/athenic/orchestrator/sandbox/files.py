"""A run's files, as every backend sees them: the conversation's files in, the run's results out.

The code finds the conversation's files under ``files/`` in its working directory (read-only
where the backend can enforce it) and leaves what it wants kept in ``files/out/``. A backend
gets a ``Workspace``: the inputs by name and SHA-256 (so it can skip what a sandbox already
holds), a way to fetch their bytes, and a host directory to gather the results in:

- the local backend binds ``files_dir()`` read-only at ``files/`` and ``out_dir`` writable at
  ``files/out``;
- E2B writes the inputs that changed into the sandbox and copies ``files/out`` down into
  ``out_dir`` after the run.

What lands in ``out_dir`` is then kept by ``orchestrator/conversation_files.py``, which knows
nothing of backends.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import IO

from athenic.orchestrator.sandbox import reaping
from athenic.orchestrator.sandbox.watchdog import MIB, DiskBudget

# relative to the code's working directory
FILES_DIR = "files"
OUT_DIR = "files/out"
# files and folders a run may make in files/out, at least (more when its file limits allow)
_OUT_ENTRIES = 64
# a host folder of a run or a kernel is named after the process that made it (its pid and start
# time: after a container's restart the new orchestrator may have the old one's pid); a process
# killed before it could remove its folders (SIGKILL, an OOM kill: a restarted container keeps
# its emptyDir) leaves them to the next start's ``sweep_stale``
_HOST_DIR = re.compile(r"athenic-(?:files|kernel-files|sandbox)-(\d+)\.(\d+)-")
_swept = False


def _start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot; /proc/<pid>/stat field 22), None: gone."""
    fields = reaping.stat_fields(pid)
    try:
        return int(fields[19]) if fields else None
    except (ValueError, IndexError):
        return None


def host_dir(kind: str) -> str:
    """A fresh host folder of this process (``kind``: files, kernel-files or sandbox)."""
    return tempfile.mkdtemp(prefix=f"athenic-{kind}-{os.getpid()}.{_start_time(os.getpid()) or 0}-")


def sweep_stale() -> int:
    """Remove the host folders that processes now gone left behind (once per process); how many."""
    global _swept
    if _swept:
        return 0
    _swept = True
    removed = 0
    try:
        entries = list(os.scandir(tempfile.gettempdir()))
    except OSError:
        return 0
    for entry in entries:
        match = _HOST_DIR.match(entry.name)
        if match is None or not entry.is_dir(follow_symlinks=False):
            continue
        if _start_time(int(match.group(1))) == int(match.group(2)):
            continue  # (its maker runs)
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += 1
    return removed

Fetch = Callable[[str, IO[bytes]], Awaitable[None]]


@dataclass(frozen=True)
class StagedFile:
    name: str
    size: int
    sha256: str


@dataclass(eq=False)
class Workspace:
    inputs: list[StagedFile]
    fetch: Fetch  # writes the named input's bytes to the file given
    max_file_bytes: int  # a backend copying results down skips larger ones (and says so)
    max_files: int  # ... and stops after this many
    # results a backend could not bring back, in words (name and why)
    not_kept: list[str] = field(default_factory=list)
    _materialized: bool = False
    _root: str | None = field(default=None, init=False, repr=False)
    _remove: weakref.finalize | None = field(default=None, init=False, repr=False)  # type: ignore[type-arg]

    @property
    def made(self) -> bool:
        """Whether the host directory exists (a run with no files in and none out makes none)."""
        return self._root is not None

    @property
    def root(self) -> str:
        """The host directory, made on first use."""
        if self._root is None:
            self._root = host_dir("files")
            os.makedirs(os.path.join(self._root, "files", "out"))
            # removed with the object at the latest (a cancelled run's workspace too)
            self._remove = weakref.finalize(self, shutil.rmtree, self._root, True)
        return self._root

    @property
    def inputs_dir(self) -> str:
        return os.path.join(self.root, "files")

    @property
    def out_dir(self) -> str:
        return os.path.join(self.inputs_dir, "out")

    async def files_dir(self, owner: int | None = None) -> str:
        """The host directory holding every input (fetched on first use) and ``out/``.

        ``owner``: the uid the sandboxed code runs as when it is not ours (the orchestrator runs
        as root): it gets ``out/`` to write in, and may read the rest.
        """
        if not self._materialized:
            for item in self.inputs:
                path = os.path.join(self.inputs_dir, item.name)
                with open(path, "wb") as handle:  # noqa: ASYNC230 (a local file; the fetch is the wait)
                    await self.fetch(item.name, handle)
                self._share(path, owner, 0o440)
            self._share(self.root, owner, 0o750)
            self._share(self.inputs_dir, owner, 0o750)
            if owner is not None:
                os.chown(self.out_dir, owner, owner)
            self._materialized = True
        return self.inputs_dir

    @staticmethod
    def _share(path: str, owner: int | None, mode: int) -> None:
        """Readable by the sandbox's uid through its group (ours already: same uid, or mapped to it)."""
        if owner is not None:
            os.chown(path, -1, owner)
            os.chmod(path, mode)

    async def read(self, name: str) -> bytes:
        """One input's bytes (a backend that copies inputs one by one)."""
        with tempfile.TemporaryFile() as handle:
            await self.fetch(name, handle)
            handle.seek(0)
            return handle.read()

    def cleanup(self) -> None:
        if self._remove is not None:
            self._remove()


class KernelFiles:
    """The ``files/`` of a long-lived kernel: a host folder bound read-only at ``files/`` (and its
    ``out/`` writable at ``files/out``) when the kernel starts; before each run it is made to
    hold exactly that run's inputs, after it ``out/`` is handed to the run's workspace."""

    def __init__(self, owner: int | None) -> None:
        self.owner = owner
        self.root = host_dir("kernel-files")
        self.out = os.path.join(self.root, "out")
        os.makedirs(self.out)
        Workspace._share(self.root, owner, 0o755)
        if owner is not None:
            os.chown(self.out, owner, owner)
        # what the last stage put beside out/: the folder is read-only to the code, so that is all
        # it holds there (removed by name, without reading the folder)
        self._staged: set[str] = set()
        self._remove = weakref.finalize(self, shutil.rmtree, self.root, True)

    async def stage(self, workspace: Workspace | None) -> None:
        """Inputs of this run in, the last run's inputs and its leftovers in ``out/`` gone."""
        for name in self._staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.root, name))
        self._staged.clear()
        for entry in os.scandir(self.out):
            shutil.rmtree(entry.path) if entry.is_dir(follow_symlinks=False) else os.unlink(entry.path)
        if workspace is None or not workspace.inputs:
            return
        source = await workspace.files_dir()
        for item in workspace.inputs:
            target = os.path.join(self.root, item.name)
            self._staged.add(item.name)
            shutil.copyfile(os.path.join(source, item.name), target)
            os.chmod(target, 0o444)

    def out_empty(self) -> bool:
        """Whether the code left nothing in ``out/`` (one directory read: most runs leave nothing)."""
        try:
            with os.scandir(self.out) as entries:
                return next(entries, None) is None
        except OSError:  # closed meanwhile
            return True

    def hand_over(self, workspace: Workspace | None) -> None:
        """What the code left in ``out/`` moves to the run's workspace (its results)."""
        if not os.path.isdir(self.out):  # closed meanwhile
            return
        for entry in os.scandir(self.out):
            if workspace is None:
                shutil.rmtree(entry.path) if entry.is_dir(follow_symlinks=False) else os.unlink(entry.path)
            else:
                shutil.move(entry.path, os.path.join(workspace.out_dir, entry.name))

    def close(self) -> None:
        self._remove()


def out_budget(out_dir: str, workspace: Workspace | None, floor_mib: int) -> DiskBudget:
    """What a run may write into ``files/out`` (a host folder, outside the sandbox's sized tmpfs):
    all its file limits let it keep, and at least what its ``/tmp`` holds."""
    files = workspace.max_files if workspace is not None else 0
    per_file = workspace.max_file_bytes if workspace is not None else 0
    return DiskBudget(out_dir, max(files * per_file, floor_mib * MIB), max(4 * files, _OUT_ENTRIES))


__all__ = ["FILES_DIR", "OUT_DIR", "KernelFiles", "StagedFile", "Workspace", "host_dir", "out_budget", "sweep_stale"]
