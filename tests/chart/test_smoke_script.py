"""The `helm test` hook's script, run as the hook runs it (`python -c <script>`, standard
library only), failing when it should: the passing runs (answered; 401 with auth on) are in
test_rendered_pods_run.py, against services started with the chart's environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.helm import CHART_DIR
from tests.support.nats import NatsServer, free_port
from tests.support.services import Api

pytestmark = pytest.mark.integration

SCRIPT = (CHART_DIR / "files" / "smoke_test.py").read_text()


def run_hook(api_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ATHENIC_")}
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60,
                          env={**clean, "ATHENIC_API_URL": api_url, **env})


@pytest.fixture
def api(nats_server: NatsServer, tmp_path: Path) -> Iterator[Api]:
    service = Api(nats_server.url, tmp_path).start()
    try:
        yield service
    finally:
        service.terminate()


def test_hook_fails_when_nothing_answers(api: Api) -> None:
    """No orchestrator: the api accepts the message but no answer comes; the test must say so."""
    done = run_hook(api.url, ATHENIC_ANSWER_TIMEOUT="3")
    assert done.returncode == 1
    assert "ok: POST /api/chat accepted" in done.stdout
    assert "FAIL: no answer within 3s" in done.stdout


def test_hook_fails_when_the_api_is_down() -> None:
    done = run_hook(f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 1
    assert "FAIL: GET /api/health -> 0 unreachable" in done.stdout
