"""Files reach the code and come back, on the local backend: real api, orchestrator, bubblewrap sandbox.

An uploaded CSV is read by the code at ``files/``; a PNG it saves into ``files/out/`` and a figure
it shows both come back as conversation files whose URLs serve them; the inputs are read-only.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from athenic.orchestrator.sandbox.figures import PNG_SIGNATURE
from tests.support.nats import NatsServer
from tests.support.services import Orchestrator, wait_for_status

pytestmark = pytest.mark.e2e

FINAL = {"completed", "failed", "cancelled"}
CSV = "x,y\n1,2\n2,4\n3,9\n"
CODE = (
    "import csv, os\n"
    "import matplotlib.pyplot as plt\n"
    "rows = list(csv.DictReader(open('files/data.csv')))\n"
    "print('rows', len(rows), 'sum', sum(int(r['y']) for r in rows))\n"
    "try:\n"
    "    open('files/data.csv', 'a').write('tampered')\n"
    "    print('WRITABLE')\n"
    "except OSError as exc:\n"
    "    print('read-only', type(exc).__name__)\n"
    "plt.plot([int(r['x']) for r in rows], [int(r['y']) for r in rows])\n"
    "plt.savefig('files/out/plot.png')\n"
    "open('files/out/summary.txt', 'w').write('three rows')\n"
    "plt.show()\n"
)


@pytest.fixture(scope="module")
def orchestrator(system_nats: NatsServer, module_tmp: Path) -> Iterator[Orchestrator]:
    service = Orchestrator(system_nats.url, module_tmp, ATHENIC_RUN_MAX_FILES="4").start()
    try:
        yield service
    finally:
        service.terminate()


def ask(client: httpx.Client, client_id: str, code: str) -> dict[str, Any]:
    posted = client.post("/api/chat", json={"message": f"Run:\n```python\n{code}```"},
                         headers={"x-client-id": client_id})
    assert posted.status_code == 200, posted.text
    state = wait_for_status(client, client_id, FINAL, request_id=posted.headers["x-request-id"], timeout=90)
    answer = state["lastResponse"]
    assert isinstance(answer, dict) and answer["status"] == "completed", answer
    return answer


def test_code_reads_an_upload_and_its_pngs_come_back_as_files(orchestrator: Orchestrator,
                                                              client: httpx.Client) -> None:
    client_id = str(uuid.uuid4())
    uploaded = client.post(f"/api/chat/{client_id}/files", files={"file": ("data.csv", CSV.encode(), "text/csv")})
    assert uploaded.status_code == 201, uploaded.text
    answer = ask(client, client_id, CODE)
    [execution] = answer["executions"]
    assert execution["error"] is None, execution["stderr"]
    assert "rows 3 sum 15" in execution["stdout"]
    assert "read-only" in execution["stdout"] and "WRITABLE" not in execution["stdout"]
    names = {f["name"]: f for f in execution["files"]}
    assert {"plot.png", "summary.txt"} <= set(names)
    shown = [f for f in execution["files"] if f["name"].startswith("result-")]
    assert len(shown) == 1 and shown[0]["contentType"] == "image/png"
    [result] = execution["results"]
    assert result["files"] == shown and "png" not in result
    for made in (names["plot.png"], shown[0]):
        got = client.get(made["url"])
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        assert got.content.startswith(PNG_SIGNATURE) and len(got.content) == made["size"]
    assert client.get(names["summary.txt"]["url"]).content == b"three rows"
    assert "plot.png" in answer["message"]
    # the conversation now lists them beside the upload, which the code could not change
    listed = {f["name"] for f in client.get(f"/api/chat/{client_id}/files").json()["files"]}
    assert {"data.csv", "plot.png", "summary.txt", shown[0]["name"]} == listed
    assert client.get(f"/api/chat/{client_id}/files/data.csv").text == CSV

    # a later run sees what the earlier one kept
    again = ask(client, client_id, "print(sorted(n for n in __import__('os').listdir('files') if n != 'out'))\n")
    assert "'plot.png'" in again["executions"][0]["stdout"]


def test_over_the_run_limit_the_execution_says_what_was_not_kept(orchestrator: Orchestrator,
                                                                 client: httpx.Client) -> None:
    client_id = str(uuid.uuid4())
    code = ("import os\n"
            "for n in range(6):\n"
            "    open(f'files/out/f{n}.txt', 'w').write(str(n))\n"
            "os.mkdir('files/out/sub')\n"
            "os.symlink('/etc/passwd', 'files/out/link')\n")
    answer = ask(client, client_id, code)
    [execution] = answer["executions"]
    assert [f["name"] for f in execution["files"]] == ["f0.txt", "f1.txt", "f2.txt", "f3.txt"]
    not_kept = execution["filesNotKept"]
    assert any(item.startswith("f4.txt: over the 4 files a run may keep") for item in not_kept)
    assert any(item.startswith("f5.txt") for item in not_kept)
    assert any(item.startswith("sub: not a regular file") for item in not_kept)
    assert any(item.startswith("link: not a regular file") for item in not_kept)
    assert "were not kept" in answer["message"]
