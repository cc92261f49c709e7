"""`athenic`: run the whole system on one machine (`athenic dev`), talk to it (`athenic chat`) and
publish sandbox policies without Kubernetes (`athenic quotas`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from athenic import cli_quotas
from athenic.shared.quotas import QuotaFileError, load_quotas
from athenic.shared.settings import NatsSettings, load

DEFAULT_API = "http://127.0.0.1:3000"
FINAL = {"completed", "failed", "cancelled"}


def _bin(name: str) -> str:
    """A console script of this environment (next to the running interpreter) or on PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        sys.exit(f"athenic: `{name}` not found; run `make dev` (it installs everything into .venv)")
    return found


def _name(proc: subprocess.Popen[bytes]) -> str:
    args = proc.args
    return Path(str(args[0] if isinstance(args, list) else args)).name


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait(what: str, check: object, timeout: float, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        for proc in procs:
            if proc.poll() is not None:
                sys.exit(f"athenic dev: {_name(proc)} exited with {proc.returncode} "
                         f"while waiting for {what}; see its log above")
        time.sleep(0.05)
    sys.exit(f"athenic dev: {what} did not come up within {timeout:.0f}s")


def _api_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def dev(args: argparse.Namespace) -> None:
    if args.quotas:
        try:  # refuse a bad file before starting anything
            load_quotas(args.quotas)
        except QuotaFileError as exc:
            sys.exit(f"athenic dev: {exc}")
    data = Path(args.data_dir).resolve()
    (data / "jetstream").mkdir(parents=True, exist_ok=True)
    if _port_open(args.nats_port):
        sys.exit(f"athenic dev: port {args.nats_port} is taken (another nats-server?); use --nats-port")
    if _port_open(args.port):
        sys.exit(f"athenic dev: port {args.port} is taken; use --port or API_SERVER_PORT")
    nats_url = f"nats://127.0.0.1:{args.nats_port}"
    # Auth is off unless ATHENIC_AUTH says otherwise: listen on loopback unless --host says otherwise.
    env = {**os.environ, "NATS_URL": nats_url, "API_SERVER_PORT": str(args.port), "API_HOST": args.host,
           "ATHENIC_HEALTH_PORT": str(args.health_port), "ATHENIC_HEALTH_HOST": args.host, "NATS_REPLICAS": "1",
           "ATHENIC_NOTIFIER_HEALTH_PORT": str(args.notifier_health_port)}
    env.setdefault("LOG_FORMAT", "console")
    procs: list[subprocess.Popen[bytes]] = []

    def stop_now(*_: object) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()

    def stop_all(*_: object) -> None:
        # A second Ctrl-C (or a SIGTERM) while stopping kills what is left, never leaves it running.
        signal.signal(signal.SIGINT, stop_now)
        signal.signal(signal.SIGTERM, stop_now)
        # In order: the api stops taking messages, the orchestrator drains, then the broker.
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        procs.append(subprocess.Popen([_bin("nats-server"), "-js", "-sd", str(data / "jetstream"),
                                       "-a", "127.0.0.1", "-p", str(args.nats_port)], start_new_session=True))
        _wait("nats-server", lambda: _port_open(args.nats_port), 15, procs)
        if args.quotas:
            settings = load(NatsSettings, {**os.environ, "NATS_URL": nats_url, "NATS_REPLICAS": "1"})
            report = asyncio.run(cli_quotas.publish_file(Path(args.quotas), settings))
            print(f"athenic dev: sandbox quotas from {args.quotas}: {cli_quotas.summary(report)}", flush=True)
        procs.append(subprocess.Popen([_bin("athenic-orchestrator")], env=env, start_new_session=True))
        procs.append(subprocess.Popen([_bin("athenic-notifier")], env=env, start_new_session=True))
        procs.append(subprocess.Popen([_bin("athenic-api")], env=env, start_new_session=True))
        api = f"http://127.0.0.1:{args.port}"
        _wait("the api", lambda: _api_ready(api), 30, procs)
        where = api if args.host == "127.0.0.1" else f"http://{args.host}:{args.port} (and {api})"
        print(f"\nathenic dev: api listening on {where}  (NATS {nats_url}, data in {data})\n"
              f"  try:  .venv/bin/athenic chat \"Hello\"   |   Ctrl-C stops everything\n", flush=True)
        while all(proc.poll() is None for proc in procs):
            time.sleep(0.5)
        dead = [p for p in procs if p.poll() is not None]
        print(f"athenic dev: {_name(dead[0])} exited with {dead[0].returncode}; stopping",
              file=sys.stderr)
        raise SystemExit(1)
    except KeyboardInterrupt:
        print("\nathenic dev: stopping", flush=True)
    finally:
        stop_all()


def _print_state(state: dict[str, object]) -> None:
    response = state.get("lastResponse")
    if not isinstance(response, dict):
        print("(no answer yet)")
        return
    print(response.get("message", ""))
    for execution in response.get("executions") or []:
        if isinstance(execution, dict) and execution.get("stdout") and execution["stdout"] not in str(
            response.get("message", "")
        ):
            print(f"--- stdout ---\n{execution['stdout']}")


def chat(args: argparse.Namespace) -> None:
    headers = {"x-client-id": args.client_id} if args.client_id else {}
    if args.token:
        headers["authorization"] = f"Bearer {args.token}"
    with httpx.Client(base_url=args.url, timeout=10) as client:
        try:
            posted = client.post("/api/chat", json={"message": args.message}, headers=headers)
        except httpx.HTTPError as exc:
            sys.exit(f"athenic chat: cannot reach {args.url} ({exc}); is `make dev` running?")
        if posted.status_code != 200:
            sys.exit(f"athenic chat: {posted.status_code} {posted.text}")
        client_id = posted.json()["clientId"]
        request_id = posted.headers.get("x-request-id")
        print(f"clientId {client_id}", file=sys.stderr)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            got = client.get(f"/api/chat/response/{client_id}", headers=headers)
            if got.status_code == 200:
                state = got.json()
                if state.get("status") in FINAL and (request_id is None or state.get("requestId") == request_id):
                    _print_state(state)
                    sys.exit(0 if state["status"] == "completed" else 1)
            elif got.status_code != 404:
                sys.exit(f"athenic chat: {got.status_code} {got.text}")
            time.sleep(0.2)
    sys.exit(f"athenic chat: no answer within {args.timeout:.0f}s (clientId {client_id})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="athenic", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    dev_p = sub.add_parser("dev", help="run nats-server, the api, an orchestrator and the notifier in the foreground")
    dev_p.add_argument("--port", type=int, default=int(os.environ.get("API_SERVER_PORT", "3000")))
    dev_p.add_argument("--host", default="127.0.0.1",
                       help="address the api and the orchestrator's health port listen on (default 127.0.0.1: "
                            "this machine only; 0.0.0.0 for every interface). NATS stays on 127.0.0.1")
    dev_p.add_argument("--nats-port", type=int, default=4222)
    dev_p.add_argument("--health-port", type=int, default=9090, help="the orchestrator's health/metrics port")
    dev_p.add_argument("--notifier-health-port", type=int, default=9091, help="the notifier's health/metrics port")
    dev_p.add_argument("--data-dir", default=".athenic", help="JetStream data (default .athenic/)")
    dev_p.add_argument("--quotas", help="a YAML file of SandboxQuota objects to publish as the operator would")
    dev_p.set_defaults(func=dev)
    chat_p = sub.add_parser("chat", help="post a message and print the answer")
    chat_p.add_argument("message")
    chat_p.add_argument("--url", default=os.environ.get("ATHENIC_URL", DEFAULT_API))
    chat_p.add_argument("--client-id", help="continue a conversation")
    chat_p.add_argument("--token", default=os.environ.get("ATHENIC_TOKEN"), help="bearer token when auth is on")
    chat_p.add_argument("--timeout", type=float, default=120.0)
    chat_p.set_defaults(func=chat)
    cli_quotas.register(sub)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
