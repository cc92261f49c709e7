"""A local stand-in for E2B's two HTTP endpoints, for the real SDK to talk to over loopback.

With ``E2B_API_URL`` and ``E2B_SANDBOX_URL`` both set to ``standin.url``, the SDK
(``e2b-code-interpreter``'s ``AsyncSandbox``) creates sandboxes with ``POST /v2/sandboxes``,
refreshes their lifetime with ``POST /sandboxes/{id}/timeout``, kills them with
``DELETE /sandboxes/{id}``, checks ``GET /health`` after a dropped stream, and runs code with
``POST /execute`` (headers ``E2b-Sandbox-Id`` and ``X-Access-Token``), reading NDJSON back.

Each sandbox has a filesystem of its own (``e2b_envd_files.py``: envd's ``/files`` routes and
``filesystem.Filesystem`` RPCs, as ``sandbox.files`` calls them); its kernel runs in its
``/home/user``. Each sandbox is a real Python process holding one namespace (so state survives between
executions, like E2B's kernel); a client that goes away mid-execution interrupts it (SIGINT),
as the code interpreter does. Everything is recorded for assertions; ``execute_mode``,
``execute_status`` and ``create_status`` make the service misbehave.

The sandbox lifecycle follows E2B's API (see ``_add_lifecycle_routes``): a sandbox's timeout
counts from its create (or resume, or ``POST /sandboxes/{id}/timeout``) and, when it runs out,
pauses it if it was created with ``autoPause`` (``lifecycle={"on_timeout": "pause"}``), else
kills it. ``POST /sandboxes/{id}/pause`` answers 204 (409 when already paused);
``POST /v2/sandboxes/{id}/connect`` answers 200 for a running sandbox (its timeout only ever
extended) and 201 when it resumed a paused one; the older ``POST /sandboxes/{id}/resume``
answers 201 (409 when running); ``GET /sandboxes/{id}`` reports ``state``; a killed or unknown
sandbox is 404 everywhere. A paused sandbox keeps its memory: its kernel process is stopped
(SIGSTOP) and continued on resume. Traffic to a paused sandbox resumes it when it was created
with ``autoResume``, else it is refused with 502 as E2B's proxy does. ``create_latency`` and
``resume_latency`` (seconds) make creating and resuming take time, like the cloud's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web

from tests.support.e2b_envd_files import EnvdFiles, SandboxFiles

# The kernel of one stand-in sandbox: reads {"code": ...} lines, answers with E2B's NDJSON
# events, then an internal end marker.
_KERNEL = r'''
import ast, base64, json, os, signal, sys, time, traceback
_channel = os.fdopen(os.dup(1), "w", buffering=1)
_running = False

def _send(event):
    _channel.write(json.dumps(event) + "\n")
    _channel.flush()

class _Stream:
    def __init__(self, kind):
        self.kind = kind
    def write(self, text):
        if text:
            _send({"type": self.kind, "text": text, "timestamp": time.time_ns()})
        return len(text)
    def flush(self):
        pass
    def isatty(self):
        return False

def _interrupt(signum, frame):
    if _running:
        raise KeyboardInterrupt

def _formats(value):
    data = {"text": repr(value)}
    for attr, key in (("_repr_html_", "html"), ("_repr_markdown_", "markdown"), ("_repr_svg_", "svg"),
                      ("_repr_png_", "png"), ("_repr_jpeg_", "jpeg"), ("_repr_latex_", "latex"),
                      ("_repr_json_", "json"), ("_repr_javascript_", "javascript")):
        method = getattr(value, attr, None)
        out = method() if method is not None else None
        if out is None:
            continue
        data[key] = base64.b64encode(out).decode() if isinstance(out, bytes) else out
    return data

def display(value):
    _send({"type": "result", "is_main_result": False, **_formats(value)})

signal.signal(signal.SIGINT, _interrupt)
sys.stdout, sys.stderr = _Stream("stdout"), _Stream("stderr")
namespace = {"__name__": "__main__", "display": display}
count = 0
_send({"type": "__ready__"})  # E2B answers a create once the sandbox is up: so does the stand-in
for line in sys.stdin:
    count += 1
    code = json.loads(line)["code"]
    try:
        tree = ast.parse(code, "<cell>", "exec")
        last = ast.Expression(tree.body.pop().value) if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        _running = True
        exec(compile(tree, "<cell>", "exec"), namespace)
        value = eval(compile(last, "<cell>", "eval"), namespace) if last is not None else None
        _running = False
        if value is not None:
            _send({"type": "result", "is_main_result": True, **_formats(value)})
    except BaseException as exc:
        _running = False
        frames = exc.__traceback__
        while frames is not None and frames.tb_frame.f_code.co_filename != "<cell>":
            frames = frames.tb_next
        tb = "".join(traceback.format_exception(type(exc), exc, frames or exc.__traceback__))
        # Jupyter colours tracebacks; so does E2B's answer
        _send({"type": "error", "name": type(exc).__name__, "value": str(exc),
               "traceback": "\x1b[0;31m" + tb + "\x1b[0m"})
    _send({"type": "number_of_executions", "execution_count": count})
    _send({"type": "__end__"})
'''

ExecuteMode = Literal["ok", "hang", "drop"]


@dataclass(eq=False)
class StandInSandbox:
    sandbox_id: str
    template: str
    api_key: str
    access_token: str
    allow_internet: bool | None
    timeout: int | None
    metadata: dict[str, str]
    process: asyncio.subprocess.Process
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    killed: bool = False
    executions: int = 0
    # when an execution interrupted by a departing client had actually stopped (monotonic)
    interrupted_at: list[float] = field(default_factory=list)
    lifetimes: list[int] = field(default_factory=list)
    # lifecycle (E2B's autoPause / autoResume); see E2BStandIn._add_lifecycle_routes
    auto_pause: bool = False
    auto_resume: bool = False
    state: Literal["running", "paused"] = "running"
    expires_at: float = float("inf")  # monotonic; when the sandbox's timeout runs out
    created_at: float = field(default_factory=time.monotonic)
    # its filesystem (e2b_envd_files.py): the kernel's working directory is its /home/user
    files: SandboxFiles = field(default_factory=SandboxFiles)


class E2BStandIn:
    def __init__(self, accepted_keys: set[str] | None = None) -> None:
        # None accepts any key; otherwise any other key gets 401 as from E2B
        self.accepted_keys = accepted_keys
        self.execute_mode: ExecuteMode = "ok"
        # answer every execution with this error status (400, 500...) when set
        self.execute_status: int | None = None
        # answer every create with this error status (429, 500, 503...) when set
        self.create_status: int | None = None
        self.sandboxes: dict[str, StandInSandbox] = {}
        self.creates: list[StandInSandbox] = []
        self.create_attempts = 0
        self.kills: list[str] = []
        self.kill_times: dict[str, float] = {}
        self.executes: list[str] = []
        # lifecycle: latencies, and what happened (sandbox ids, in order)
        self.create_latency = 0.0
        self.resume_latency = 0.0
        self.pauses: list[str] = []
        self.resumes: list[str] = []
        self.connects: list[str] = []
        self.expired: list[str] = []
        self._expiry: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._drains: set[asyncio.Task[None]] = set()
        self.url = ""
        self.envd_files = EnvdFiles(self._sandbox_files)

    def _sandbox_files(self, request: web.Request) -> SandboxFiles | None:
        sandbox = self.sandboxes.get(request.headers.get("E2b-Sandbox-Id", ""))
        return None if sandbox is None or sandbox.killed else sandbox.files

    async def __aenter__(self) -> E2BStandIn:
        app = web.Application()
        app.router.add_post("/v2/sandboxes", self._create)
        app.router.add_delete("/sandboxes/{sandbox_id}", self._kill)
        app.router.add_post("/sandboxes/{sandbox_id}/timeout", self._set_timeout)
        app.router.add_get("/health", self._health)
        app.router.add_post("/execute", self._execute)
        self._add_lifecycle_routes(app)
        self.envd_files.add_routes(app)
        # the code interpreter notices a client that goes away: so does the stand-in
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(self._runner, sock)
        await site.start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._expiry = asyncio.create_task(self._expire_forever(), name="e2b-standin-expiry")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        for sandbox in self.sandboxes.values():
            with contextlib.suppress(ProcessLookupError):
                sandbox.process.kill()
            await sandbox.process.wait()
            sandbox.files.remove_all()
        for task in list(self._drains):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def live(self) -> list[StandInSandbox]:
        return [sandbox for sandbox in self.sandboxes.values() if not sandbox.killed]

    @property
    def running(self) -> list[StandInSandbox]:
        """Sandboxes that bill compute now (alive and not paused)."""
        return [sandbox for sandbox in self.live if sandbox.state == "running"]

    # -- control plane -------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        self.create_attempts += 1
        key = request.headers.get("X-API-KEY", "")
        if self.accepted_keys is not None and key not in self.accepted_keys:
            return _api_error(401, "Invalid API key")
        if self.create_status is not None:
            return _api_error(self.create_status, "stand-in told to fail")
        body = await request.json()
        if self.create_latency:
            await asyncio.sleep(self.create_latency)
        files = SandboxFiles()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-u", "-c", _KERNEL,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 27, cwd=files.home,
        )
        assert process.stdout is not None
        await process.stdout.readline()  # the kernel's __ready__
        sandbox = StandInSandbox(
            sandbox_id=f"sbx{secrets.token_hex(6)}",
            template=body["templateID"],
            api_key=key,
            access_token=secrets.token_hex(8),
            allow_internet=body.get("allow_internet_access"),
            timeout=body.get("timeout"),
            metadata=body.get("metadata") or {},
            process=process,
            auto_pause=bool(body.get("autoPause")),
            auto_resume=bool(body.get("autoResume")),
            files=files,
        )
        _arm(sandbox, sandbox.timeout)
        self.sandboxes[sandbox.sandbox_id] = sandbox
        self.creates.append(sandbox)
        return web.json_response(_sandbox_body(sandbox), status=201)

    async def _kill(self, request: web.Request) -> web.Response:
        sandbox = self.sandboxes.get(request.match_info["sandbox_id"])
        if sandbox is None or sandbox.killed:
            return _api_error(404, "sandbox not found")
        sandbox.killed = True
        self.kills.append(sandbox.sandbox_id)
        self.kill_times[sandbox.sandbox_id] = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            sandbox.process.kill()
        return web.Response(status=204)

    async def _set_timeout(self, request: web.Request) -> web.Response:
        sandbox = self.sandboxes.get(request.match_info["sandbox_id"])
        if sandbox is None or sandbox.killed:
            return _api_error(404, "sandbox not found")
        sandbox.lifetimes.append((await request.json())["timeout"])
        _arm(sandbox, sandbox.lifetimes[-1])
        return web.Response(status=204)

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    # -- lifecycle: pause, resume, connect, timeouts (E2B's API; kept apart from the rest) ---

    def _add_lifecycle_routes(self, app: web.Application) -> None:
        app.router.add_post("/sandboxes/{sandbox_id}/pause", self._pause)
        app.router.add_post("/sandboxes/{sandbox_id}/resume", self._resume_route)
        app.router.add_post("/v2/sandboxes/{sandbox_id}/connect", self._connect)
        app.router.add_get("/sandboxes/{sandbox_id}", self._info)

    def _alive(self, request: web.Request) -> StandInSandbox | None:
        sandbox = self.sandboxes.get(request.match_info["sandbox_id"])
        return None if sandbox is None or sandbox.killed else sandbox

    async def _pause(self, request: web.Request) -> web.Response:
        sandbox = self._alive(request)
        if sandbox is None:
            return _api_error(404, "sandbox not found")
        if sandbox.state == "paused":
            return _api_error(409, "sandbox is already paused")
        await self.pause(sandbox)
        return web.Response(status=204)

    async def pause(self, sandbox: StandInSandbox) -> None:
        """Pause ``sandbox`` keeping its memory (the kernel process is stopped, not killed)."""
        async with sandbox.lock:  # a pause waits for a running cell, as a snapshot would
            sandbox.state = "paused"
            sandbox.expires_at = float("inf")
            with contextlib.suppress(ProcessLookupError):
                sandbox.process.send_signal(signal.SIGSTOP)
        self.pauses.append(sandbox.sandbox_id)

    async def _resume(self, sandbox: StandInSandbox, timeout: int) -> None:
        if self.resume_latency:
            await asyncio.sleep(self.resume_latency)
        with contextlib.suppress(ProcessLookupError):
            sandbox.process.send_signal(signal.SIGCONT)
        sandbox.state = "running"
        _arm(sandbox, timeout)
        self.resumes.append(sandbox.sandbox_id)

    async def _connect(self, request: web.Request) -> web.Response:
        sandbox = self._alive(request)
        if sandbox is None:
            return _api_error(404, "sandbox not found")
        timeout = (await request.json()).get("timeout") or 300
        self.connects.append(sandbox.sandbox_id)
        if sandbox.state == "running":
            # "the timeout will update only if the new timeout is longer than the existing one"
            sandbox.expires_at = max(sandbox.expires_at, time.monotonic() + timeout)
            return web.json_response(_sandbox_body(sandbox), status=200)
        await self._resume(sandbox, timeout)
        return web.json_response(_sandbox_body(sandbox), status=201)

    async def _resume_route(self, request: web.Request) -> web.Response:
        sandbox = self._alive(request)
        if sandbox is None:
            return _api_error(404, "sandbox not found")
        if sandbox.state == "running":
            return _api_error(409, "sandbox is already running")
        await self._resume(sandbox, (await request.json()).get("timeout") or 300)
        return web.json_response(_sandbox_body(sandbox), status=201)

    async def _info(self, request: web.Request) -> web.Response:
        sandbox = self._alive(request)
        if sandbox is None:
            return _api_error(404, "sandbox not found")
        return web.json_response({**_sandbox_body(sandbox), "state": sandbox.state,
                                  "metadata": sandbox.metadata, "cpuCount": 2, "memoryMB": 512,
                                  "diskSizeMB": 1024, "startedAt": "2026-01-01T00:00:00Z",
                                  "endAt": "2026-01-02T00:00:00Z", "alias": sandbox.template})

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            for sandbox in list(self.live):
                if sandbox.state != "running" or sandbox.expires_at > now:
                    continue
                self.expired.append(sandbox.sandbox_id)
                if sandbox.auto_pause:
                    await self.pause(sandbox)
                else:
                    self.expire_kill(sandbox)

    def expire_kill(self, sandbox: StandInSandbox) -> None:
        sandbox.killed = True
        self.kills.append(sandbox.sandbox_id)
        self.kill_times[sandbox.sandbox_id] = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            sandbox.process.kill()

    # -- code interpreter ----------------------------------------------------------------

    async def _execute(self, request: web.Request) -> web.StreamResponse:
        sandbox = self.sandboxes.get(request.headers.get("E2b-Sandbox-Id", ""))
        if sandbox is None or sandbox.killed:
            return web.Response(status=404, text="sandbox not found")
        if request.headers.get("X-Access-Token") != sandbox.access_token:
            return web.Response(status=401, text="bad envd access token")
        if sandbox.state == "paused":
            if not sandbox.auto_resume:
                return web.Response(status=502, text=f"sandbox {sandbox.sandbox_id} is paused")
            await self._resume(sandbox, max(300, sandbox.timeout or 300))
        code = (await request.json())["code"]
        self.executes.append(sandbox.sandbox_id)
        if self.execute_status is not None:
            return web.Response(status=self.execute_status, text="stand-in told to fail")
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        if self.execute_mode == "hang":
            await asyncio.Event().wait()
        if self.execute_mode == "drop":
            event = {"type": "stdout", "text": "partial\n", "timestamp": time.time_ns()}
            await response.write(json.dumps(event).encode() + b"\n")
            assert request.transport is not None
            request.transport.abort()
            return response
        events: asyncio.Queue[bytes | None] = asyncio.Queue()
        cell = asyncio.create_task(self._run_cell(sandbox, code, events))
        try:
            while (line := await events.get()) is not None:
                await response.write(line)
        except (asyncio.CancelledError, ConnectionResetError):
            # the client went away (aiohttp cancels the handler, or the next write fails, depending
            # on which it notices first): interrupt the code and let the cell finish in the background
            with contextlib.suppress(ProcessLookupError):
                sandbox.process.send_signal(signal.SIGINT)
            self._drains.add(cell)
            cell.add_done_callback(self._drains.discard)
            cell.add_done_callback(lambda _: sandbox.interrupted_at.append(time.monotonic()))
            raise
        await cell
        await response.write_eof()
        return response

    async def _run_cell(self, sandbox: StandInSandbox, code: str, events: asyncio.Queue[bytes | None]) -> None:
        async with sandbox.lock:
            sandbox.executions += 1
            process = sandbox.process
            assert process.stdin is not None
            assert process.stdout is not None
            process.stdin.write(json.dumps({"code": code}).encode() + b"\n")
            await process.stdin.drain()
            while line := await process.stdout.readline():
                if json.loads(line)["type"] == "__end__":
                    break
                events.put_nowait(line)
            events.put_nowait(None)


def _arm(sandbox: StandInSandbox, timeout: int | None) -> None:
    """Start the sandbox's timeout over (E2B's default is 300 s when none is given)."""
    sandbox.expires_at = time.monotonic() + (timeout if timeout is not None else 300)


def _sandbox_body(sandbox: StandInSandbox) -> dict[str, str]:
    return {
        "templateID": sandbox.template,
        "sandboxID": sandbox.sandbox_id,
        "clientID": "standin",
        "envdVersion": "0.2.0",
        "envdAccessToken": sandbox.access_token,
    }


def _api_error(status: int, message: str) -> web.Response:
    return web.json_response({"code": status, "message": message}, status=status)


def png_bytes() -> bytes:
    """A valid 1x1 PNG, for rich results."""
    import base64

    return base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    )

