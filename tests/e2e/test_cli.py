"""What a newcomer does: `athenic dev` in one terminal, `athenic chat` in another, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.nats import free_port
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent


def _start_dev(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Path, int, dict[str, str]]:
    """``athenic dev`` on free ports, once its api listens: the process, its log, the api port, the env."""
    api_port, nats_port, health_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATHENIC_", "E2B_", "OPENAI_", "NATS_"))}
    log = tmp_path / "dev.log"
    with open(log, "wb") as out:
        dev = subprocess.Popen(
            [str(BIN / "athenic"), "dev", "--port", str(api_port), "--nats-port", str(nats_port),
             "--health-port", str(health_port), "--notifier-health-port", str(free_port()),
             "--data-dir", str(tmp_path / "state"), *extra],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT,
        )
    deadline = time.monotonic() + 60
    while "api listening" not in log.read_text() and time.monotonic() < deadline:
        if dev.poll() is not None:
            raise AssertionError(log.read_text())
        time.sleep(0.1)
    return dev, log, api_port, env


def test_dev_runs_the_system_and_chat_gets_answers(tmp_path: Path) -> None:
    dev, log, api_port, env = _start_dev(tmp_path, "--quotas", "examples/quotas/all-in-one.yaml")
    try:
        assert f"api listening on http://127.0.0.1:{api_port}" in log.read_text()
        assert "sandbox quotas from examples/quotas/all-in-one.yaml: 2 written" in log.read_text()
        url = f"http://127.0.0.1:{api_port}"
        hello = subprocess.run([str(BIN / "athenic"), "chat", "--url", url, "Hello"],
                               capture_output=True, text=True, timeout=60, env=env)
        assert hello.returncode == 0, hello.stderr
        assert "Hello!" in hello.stdout
        code = subprocess.run([str(BIN / "athenic"), "chat", "--url", url,
                               "Run this:\n```python\nimport math\nprint(math.factorial(20))\n```"],
                              capture_output=True, text=True, timeout=60, env=env)
        assert code.returncode == 0, code.stderr
        assert "2432902008176640000" in code.stdout
    finally:
        dev.send_signal(signal.SIGINT)  # what Ctrl-C does
        try:
            dev.wait(60)
        except subprocess.TimeoutExpired:
            dev.kill()
            raise
    assert dev.returncode == 0, log.read_text()
    text = log.read_text()
    assert "orchestrator stopped" in text
    assert "notifier stopped" in text
    assert "Server Exiting" in text  # nats-server stopped last, after the services


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry))
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_second_signal_while_stopping_leaves_nothing_running(tmp_path: Path) -> None:
    dev, log, _, _ = _start_dev(tmp_path)
    services = _children(dev.pid)
    assert len(services) == 4, log.read_text()  # nats-server, orchestrator, notifier, api
    try:
        dev.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 30
        while "athenic dev: stopping" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        dev.send_signal(signal.SIGTERM)  # impatient: a second signal while the services drain
        dev.wait(60)
    finally:
        if dev.poll() is None:
            dev.kill()
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in services) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in services if _running(pid)]
    for pid in left:  # (not left behind for the rest of the suite either)
        os.kill(pid, signal.SIGKILL)
    assert not left, f"services left running:\n{log.read_text()}"


def test_chat_says_so_when_nothing_listens() -> None:
    result = subprocess.run([str(BIN / "athenic"), "chat", "--url", f"http://127.0.0.1:{free_port()}", "hi"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "is `make dev` running?" in result.stderr


def test_each_service_fails_fast_naming_a_bad_setting() -> None:
    for script, variable, value in (("athenic-api", "API_SERVER_PORT", "http"),
                                    ("athenic-orchestrator", "ATHENIC_CONCURRENCY", "0"),
                                    ("athenic-api", "NATS_REPLICAS", "two"),
                                    ("athenic-notifier", "ATHENIC_WEBHOOK_SECRET", "not-a-whsec-secret"),
                                    ("athenic-notifier", "ATHENIC_NOTIFY_MAX_ATTEMPTS", "0")):
        result = subprocess.run([str(BIN / script)], capture_output=True, text=True, timeout=30,
                                env={**os.environ, variable: value})
        assert result.returncode == 2, (script, result.stderr)
        assert variable in result.stderr
