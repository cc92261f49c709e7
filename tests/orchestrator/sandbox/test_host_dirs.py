"""Host folders of runs and kernels that a killed orchestrator left are removed at the next start.

A process killed before it could remove its folders (SIGKILL, an OOM kill) left them in the
temporary directory, with whatever its runs had written into ``files/out`` (up to a run's files
budget each); a container restarted in its pod keeps that emptyDir, and its new orchestrator may
carry the old one's pid (PID 1), so a folder is named after its maker's pid *and* start time.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from athenic.orchestrator.sandbox import files
from athenic.orchestrator.sandbox.local import LocalSandbox

pytestmark = pytest.mark.integration  # (real processes, a real LocalSandbox)


@pytest.fixture
def tmp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(files, "_swept", False)
    return tmp_path


def folder(root: Path, name: str) -> Path:
    path = root / name
    (path / "out").mkdir(parents=True)
    (path / "out" / "result.bin").write_bytes(bytes(4096))
    return path


def test_the_folders_of_gone_processes_are_removed_and_live_ones_kept(tmp_root: Path) -> None:
    child = subprocess.Popen(["sleep", "60"])
    try:
        start = files._start_time(child.pid)
        assert start is not None
        ours = Path(files.host_dir("kernel-files"))
        running = folder(tmp_root, f"athenic-files-{child.pid}.{start}-abc")
        # the same pid, another start time: a restarted container's earlier orchestrator
        earlier = (files._start_time(os.getpid()) or 0) - 1
        restarted = folder(tmp_root, f"athenic-kernel-files-{os.getpid()}.{earlier}-x")
        dead = folder(tmp_root, f"athenic-sandbox-{2 ** 22 + 7}.12345-y")
        unrelated = folder(tmp_root, "athenic-files-notours")
        assert files.sweep_stale() == 2
        assert ours.exists() and running.exists() and unrelated.exists()
        assert not restarted.exists() and not dead.exists()
        assert files.sweep_stale() == 0, "once per process"
    finally:
        child.kill()
        child.wait()


def test_a_new_local_sandbox_sweeps_what_a_killed_orchestrator_left(tmp_root: Path) -> None:
    stale = folder(tmp_root, f"athenic-files-{2 ** 22 + 9}.1-z")
    LocalSandbox(output_limit_bytes=1024)
    assert not stale.exists()
