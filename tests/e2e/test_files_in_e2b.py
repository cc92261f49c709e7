"""Files reach the code and come back on the E2B backend: the real SDK against the stand-in,
which speaks envd's filesystem API (tests/support/e2b_envd_files.py), with a real api and
orchestrator. An unchanged file is not written to the sandbox again."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.e2b_standin import E2BStandIn, png_bytes
from tests.support.nats import NatsServer
from tests.support.services import Api, Orchestrator

pytestmark = pytest.mark.e2e

FINAL = {"completed", "failed", "cancelled"}
PNG = base64.b64encode(png_bytes()).decode()
CODE = (
    "import base64, os\n"
    "rows = open('files/data.csv').read().splitlines()\n"
    "print('rows', len(rows))\n"
    f"PNG = base64.b64decode({PNG!r})\n"
    "open('files/out/plot.png', 'wb').write(PNG)\n"
    "class Figure:\n"
    "    def _repr_png_(self):\n"
    "        return PNG\n"
    "    def __repr__(self):\n"
    "        return '<Figure>'\n"
    "Figure()\n"
)


async def answer_of(http: httpx.AsyncClient, client_id: str, message: str) -> dict[str, Any]:
    posted = await http.post("/api/chat", json={"message": message}, headers={"x-client-id": client_id})
    assert posted.status_code == 200, posted.text
    request_id = posted.headers["x-request-id"]
    async with asyncio.timeout(90):
        while True:
            state = (await http.get(f"/api/chat/response/{client_id}")).json()
            if state["status"] in FINAL and state["requestId"] == request_id:
                answer: dict[str, Any] = state["lastResponse"]
                return answer
            await asyncio.sleep(0.05)


async def test_an_upload_reaches_the_e2b_sandbox_and_its_pngs_come_back(nats_server: NatsServer,
                                                                        tmp_path: Path) -> None:
    async with E2BStandIn() as standin:
        api = Api(nats_server.url, tmp_path).start()
        orchestrator = Orchestrator(nats_server.url, tmp_path, ATHENIC_SANDBOX="e2b", E2B_API_KEY="e2b_test_key",
                                    E2B_API_URL=standin.url, E2B_SANDBOX_URL=standin.url)
        try:
            await asyncio.to_thread(orchestrator.start)
            client_id = str(uuid.uuid4())
            async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
                uploaded = await http.post(f"/api/chat/{client_id}/files", params={"name": "data.csv"},
                                           content=b"a,b\n1,2\n3,4\n")
                assert uploaded.status_code == 201, uploaded.text
                answer = await answer_of(http, client_id, f"Run:\n```python\n{CODE}```")
                assert answer["status"] == "completed", answer
                [execution] = answer["executions"]
                assert execution["backend"] == "e2b"
                assert execution["error"] is None, execution
                assert execution["stdout"] == "rows 3\n"
                names = [f["name"] for f in execution["files"]]
                assert names[0] == "plot.png" and names[1].startswith("result-") and len(names) == 2
                [result] = execution["results"]
                assert result["text"] == "<Figure>" and "png" not in result
                for made in execution["files"]:
                    got = await http.get(made["url"])
                    assert got.status_code == 200 and got.content == png_bytes()
                    assert got.headers["content-type"] == "image/png"
                # files/out was emptied in the sandbox: the next run keeps nothing twice, and the
                # unchanged upload is not written again (only the new plot.png and result are)
                writes_before = [path for op, path in standin.envd_files.files_calls if op == "write"]
                assert writes_before == ["/home/user/files/data.csv"]
                again = await answer_of(http, client_id, "Run:\n```python\nprint(sorted(os.listdir('files')))\n```")
                [second] = again["executions"]
                assert second["files"] == []
                assert "'data.csv'" in second["stdout"] and "'plot.png'" in second["stdout"]
                writes = [path for op, path in standin.envd_files.files_calls if op == "write"]
                assert writes.count("/home/user/files/data.csv") == 1
                assert "/home/user/files/plot.png" in writes

                # thirty images from one run: sixteen kept (ATHENIC_RUN_MAX_FILES), fourteen named
                flood = ("for n in range(30):\n"
                         "    display(Figure())\n")
                third = await answer_of(http, client_id, f"Run:\n```python\n{flood}```")
                [run] = third["executions"]
                assert len(run["results"]) == 30 and all("png" not in r for r in run["results"])
                assert len(run["files"]) == 16 and len(run["filesNotKept"]) == 14
                assert all("over the 16 files a run may keep" in item for item in run["filesNotKept"])
                assert not third["truncated"]  # references only: far inside the record's budget
                assert len(json.dumps(third)) < 64 * 1024
            # (in a thread: the stand-in answers on this loop, and the shutdown pauses through it)
            await asyncio.to_thread(orchestrator.terminate)
            assert standin.pauses == [sandbox.sandbox_id for sandbox in standin.creates], "the shutdown paused it"
        finally:
            await asyncio.to_thread(orchestrator.terminate)
            api.terminate()
