"""Our services as real processes (their console scripts), with their logs kept for asserts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.nats import free_port


def _script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


class Service:
    def __init__(self, name: str, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([_script(self.name)], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout: float = 45) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def base_env(nats_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATHENIC_", "E2B_", "OPENAI_"))}
    env.update({"NATS_URL": nats_url, "LOG_FORMAT": "json", "LOG_LEVEL": "INFO", "ATHENIC_SANDBOX": "local"})
    env.update(extra)
    return env


class Api(Service):
    def __init__(self, nats_url: str, tmp: Path, **extra: str) -> None:
        self.port = free_port()
        # Tests post faster than a person: the rate limit is off unless a test sets it.
        extra = {"ATHENIC_RATE_LIMIT_PER_MINUTE": "0", **extra}
        super().__init__("athenic-api", base_env(nats_url, API_SERVER_PORT=str(self.port),
                                                 API_HOST="127.0.0.1", **extra), tmp / f"api-{self.port}.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True) -> Api:
        super().start()
        self.wait(ready=wait_ready)
        return self

    def wait(self, ready: bool = True, timeout: float = 30) -> None:
        route = "/api/ready" if ready else "/api/health"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, f"api exited:\n{self.log()}"
            try:
                if httpx.get(self.url + route, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"api not {'ready' if ready else 'up'}:\n{self.log()}")


class Orchestrator(Service):
    def __init__(self, nats_url: str, tmp: Path, **extra: str) -> None:
        self.port = free_port()
        super().__init__("athenic-orchestrator",
                         base_env(nats_url, ATHENIC_HEALTH_PORT=str(self.port), ATHENIC_HEALTH_HOST="127.0.0.1",
                                  ATHENIC_FETCH_TIMEOUT_SECONDS="1", **extra),
                         tmp / f"orchestrator-{self.port}.log")

    def start(self, wait_ready: bool = True) -> Orchestrator:
        super().start()
        if wait_ready:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                assert self.proc is not None and self.proc.poll() is None, f"orchestrator exited:\n{self.log()}"
                if "orchestrator consuming" in self.log():
                    return self
                time.sleep(0.05)
            raise TimeoutError(f"orchestrator not consuming:\n{self.log()}")
        return self


def wait_for_status(client: httpx.Client, client_id: str, statuses: set[str], timeout: float = 30,
                    request_id: str | None = None) -> dict[str, object]:
    """Poll the app's route until the record reaches one of ``statuses`` (for ``request_id``)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        got = client.get(f"/api/chat/response/{client_id}")
        if got.status_code == 200:
            last = got.json()
            assert isinstance(last, dict)
            if last["status"] in statuses and (request_id is None or last["requestId"] == request_id):
                return last
        time.sleep(0.05)
    raise AssertionError(f"{client_id} never reached {statuses}; last state {last}")


class Notifier(Service):
    def __init__(self, nats_url: str, tmp: Path, **extra: str) -> None:
        self.port = free_port()
        extra = {"ATHENIC_NOTIFY_RETRY_BASE_SECONDS": "0.3", "ATHENIC_NOTIFY_RETRY_MAX_SECONDS": "2", **extra}
        super().__init__("athenic-notifier",
                         base_env(nats_url, ATHENIC_NOTIFIER_HEALTH_PORT=str(self.port),
                                  ATHENIC_HEALTH_HOST="127.0.0.1", **extra),
                         tmp / f"notifier-{self.port}.log")

    def start(self, wait_ready: bool = True) -> Notifier:
        super().start()
        if wait_ready:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                assert self.proc is not None and self.proc.poll() is None, f"notifier exited:\n{self.log()}"
                if "notifier consuming" in self.log():
                    return self
                time.sleep(0.05)
            raise TimeoutError(f"notifier not consuming:\n{self.log()}")
        return self


def wait_until(check: object, what: str, timeout: float = 30) -> None:
    """Poll ``check()`` until it is true (the machine may be loaded: generous timeouts, no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
