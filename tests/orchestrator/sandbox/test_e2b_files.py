"""Conversation files in and out of an E2B sandbox: the real SDK against the stand-in's envd filesystem."""

from __future__ import annotations

import hashlib
import os
from typing import IO

import pytest
from aiohttp import web

from athenic.orchestrator.sandbox.base import RunSpec
from athenic.orchestrator.sandbox.e2b import E2BSandbox
from athenic.orchestrator.sandbox.files import StagedFile, Workspace
from tests.support.e2b_standin import E2BStandIn

pytestmark = pytest.mark.integration


def workspace(contents: dict[str, bytes], *, max_bytes: int = 1024, max_files: int = 3) -> Workspace:
    async def fetch(name: str, into: IO[bytes]) -> None:
        into.write(contents[name])

    inputs = [StagedFile(name, len(data), hashlib.sha256(data).hexdigest()) for name, data in contents.items()]
    return Workspace(inputs=inputs, fetch=fetch, max_file_bytes=max_bytes, max_files=max_files)


def run(code: str, files: Workspace) -> RunSpec:
    return RunSpec(client_id="files-1", language="python", code=code, timeout_seconds=10, workspace=files)


async def test_inputs_are_written_once_and_results_come_down_within_the_limits(e2b: E2BSandbox,
                                                                              standin: E2BStandIn) -> None:
    first = workspace({"a.txt": b"alpha", "b.txt": b"beta"})
    code = ("print(open('files/a.txt').read(), open('files/b.txt').read())\n"
            "for n in range(5):\n"
            "    open(f'files/out/r{n}.txt', 'w').write(str(n))\n"
            "open('files/out/big.bin', 'wb').write(b'x' * 2000)\n"
            "import os; os.mkdir('files/out/sub')\n")
    try:
        execution = await e2b.run(run(code, first))
        assert execution.error is None, execution
        assert execution.stdout == "alpha beta\n"
        assert sorted(os.listdir(first.out_dir)) == ["r0.txt", "r1.txt", "r2.txt"]
        reasons = "\n".join(first.not_kept)
        assert "big.bin: 2.0 KiB" in reasons or "big.bin:" in reasons
        assert "r3.txt: over the 3 files a run may keep" in reasons and "r4.txt" in reasons
        assert "sub: not a regular file" in reasons
    finally:
        first.cleanup()
    # the next run: a.txt unchanged (not written again), b.txt gone, c.txt new; files/out empty again
    second = workspace({"a.txt": b"alpha", "c.txt": b"gamma"})
    try:
        execution = await e2b.run(run("import os\nprint(sorted(os.listdir('files')), os.listdir('files/out'))\n",
                                      second))
        assert execution.stdout == "['a.txt', 'c.txt', 'out'] []\n"
        assert os.listdir(second.out_dir) == []
    finally:
        second.cleanup()
    writes = [path for op, path in standin.envd_files.files_calls if op == "write"]
    assert writes == ["/home/user/files/a.txt", "/home/user/files/b.txt", "/home/user/files/c.txt"]
    assert ("Remove", "/home/user/files/b.txt") in standin.envd_files.files_calls


async def test_the_stand_ins_paths_stay_inside_each_sandboxs_root(e2b: E2BSandbox, standin: E2BStandIn) -> None:
    await e2b.run(RunSpec(client_id="files-2", language="python", code="import os; os.symlink('/etc', 'escape')"))
    [sandbox] = standin.live
    root = os.path.realpath(sandbox.files.root)
    assert sandbox.files.host("../../../../etc/passwd") == os.path.join(root, "etc/passwd")
    with pytest.raises(web.HTTPForbidden):
        sandbox.files.host("escape/passwd")  # a link the code made, pointing out of the root


async def test_code_that_removes_its_files_gets_them_again_and_no_error(e2b: E2BSandbox, standin: E2BStandIn) -> None:
    for code in ("import os, shutil\nos.remove('files/a.txt')\nshutil.rmtree('files/out')\n",
                 "open('files/a.txt', 'w').write('changed by the code')\n",
                 "print(open('files/a.txt').read())\n"):
        files = workspace({"a.txt": b"alpha"})
        try:
            execution = await e2b.run(RunSpec(client_id="files-3", language="python", code=code,
                                              timeout_seconds=10, workspace=files))
            assert execution.error is None, execution
        finally:
            files.cleanup()
    assert execution.stdout == "alpha\n"  # rewritten: its size had changed
    writes = [path for op, path in standin.envd_files.files_calls if op == "write"]
    assert writes == ["/home/user/files/a.txt"] * 3
