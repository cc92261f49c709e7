"""A chat message that plots: the figure travels from the sandbox into the conversation's files
(NATS Object Store), and the record the app reads references it, with the orchestrator finding
the sandbox's Python by its default."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from athenic.orchestrator.sandbox.figures import PNG_SIGNATURE
from tests.support.nats import NatsServer
from tests.support.services import Orchestrator, wait_for_status

pytestmark = pytest.mark.e2e

FINAL = {"completed", "failed", "cancelled"}
CODE = (
    "import numpy as np\n"
    "import matplotlib.pyplot as plt\n"
    "x = np.linspace(0, 2 * np.pi, 100)\n"
    "plt.plot(x, np.sin(x))\n"
    "plt.show()\n"
    "print(round(float(np.sin(x).max()), 3))\n"
)


@pytest.fixture
def orchestrator(system_nats: NatsServer, tmp_path: Path) -> Iterator[Orchestrator]:
    # no ATHENIC_SANDBOX_PYTHON_ENV: the default, .athenic/sandbox-python from the repository root
    service = Orchestrator(system_nats.url, tmp_path).start()
    try:
        yield service
    finally:
        service.terminate()


def test_a_plot_comes_back_in_the_record_as_a_png(orchestrator: Orchestrator, client: httpx.Client) -> None:
    response = client.post("/api/chat", json={"message": f"Plot this:\n```python\n{CODE}```"})
    assert response.status_code == 200, response.text
    client_id, request_id = response.json()["clientId"], response.headers["x-request-id"]
    state = wait_for_status(client, client_id, FINAL, request_id=request_id, timeout=60)
    answer = state["lastResponse"]
    assert isinstance(answer, dict)
    assert answer["status"] == "completed", answer
    [execution] = answer["executions"]
    assert execution["error"] is None, execution["stderr"]
    assert execution["stdout"] == "1.0\n"
    # the figure is a conversation file: the result names it, its URL serves the PNG
    [result] = execution["results"]
    assert "png" not in result and result["text"].startswith("<Figure ")
    [kept] = result["files"]
    assert execution["files"] == [kept]
    assert kept["contentType"] == "image/png" and kept["name"].endswith(".png")
    png = client.get(kept["url"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(PNG_SIGNATURE) and len(png.content) == kept["size"]
    assert execution["resultsDropped"] == 0
    assert "It drew one figure" in answer["message"]
    assert "runs Python from its own environment" in orchestrator.log()
