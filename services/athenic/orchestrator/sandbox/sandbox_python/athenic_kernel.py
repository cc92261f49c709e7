"""The kernel server: one long-lived interpreter that runs a conversation's code, run after run.

The orchestrator (sandbox/kernel.py) starts this script inside the same bubblewrap + seccomp
sandbox as a one-shot run and hands it to the interpreter read-only. It keeps one globals
dict for the conversation; each request on stdin is a 4-byte big-endian length and a JSON
object ``{"id": n, "code": "..."}``. The code's own stdout and stderr are this process's
(pipes the orchestrator reads as they fill); when a run ends the figures still open are handed
back (athenic_sandbox_backend) and a frame ``{"id": n, "error": ...}`` goes to the descriptor in
``ATHENIC_KERNEL_FD``. The orchestrator trusts none of it: the code can write to that descriptor
too, and only ever fools its own conversation.

SIGINT interrupts a run (KeyboardInterrupt, the time limit); between runs it is ignored.

This file runs inside the sandbox's interpreter (CPython 3.11), never in the services.
"""

from __future__ import annotations

import contextlib
import json
import linecache
import os
import resource
import signal
import struct
import sys
import traceback
from typing import Any

_CONTROL_FD = int(os.environ.pop("ATHENIC_KERNEL_FD"))
# What the server calls, bound now: the code may patch json, os or struct for itself without
# breaking the server (code that digs deeper only breaks its own kernel, which is replaced).
_dumps, _loads = json.dumps, json.loads
_read, _write, _pack, _unpack = os.read, os.write, struct.pack, struct.unpack
_format_exception = traceback.format_exception
# requests arrive on a private copy of stdin; the code's stdin is /dev/null, as a one-shot run's
_REQUEST_FD = os.dup(0)
os.dup2(os.open(os.devnull, os.O_RDONLY), 0)


def _read_exactly(count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = _read(_REQUEST_FD, count - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _send(frame: dict[str, Any]) -> None:
    data = _dumps(frame).encode()
    data = _pack(">I", len(data)) + data
    while data:
        data = data[_write(_CONTROL_FD, data):]


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()  # type: ignore[union-attr]


def _figures() -> None:
    """Hand back the figures still open (as Jupyter's inline backend does at a cell's end)."""
    backend = sys.modules.get("athenic_sandbox_backend")
    if backend is None:
        return
    try:
        backend.show()
    except Exception as exc:
        print(f"athenic: figures could not be rendered: {exc!r}", file=sys.stderr)
    # each run may hand back as many figures as a one-shot run
    backend._sent = 0  # type: ignore[attr-defined]
    backend._bytes = 0  # type: ignore[attr-defined]


def _error(exc: BaseException, skip_frames: int) -> dict[str, str]:
    tb = exc.__traceback__
    for _ in range(skip_frames):
        if tb is not None:
            tb = tb.tb_next
    text = "".join(_format_exception(type(exc), exc, tb))
    with contextlib.suppress(OSError):
        _write(2, text.encode(errors="replace"))
    return {"name": type(exc).__name__, "value": str(exc), "traceback": text.rstrip("\n")}


def _run(number: int, code: str, namespace: dict[str, Any]) -> tuple[dict[str, str] | None, int | None]:
    name = f"<run {number}>"
    linecache.cache[name] = (len(code), None, code.splitlines(True), name)
    try:
        compiled = compile(code, name, "exec")
    except (SyntaxError, ValueError) as exc:
        return _error(exc, 0), None
    signal.signal(signal.SIGINT, signal.default_int_handler)
    error: dict[str, str] | None = None
    exit_code: int | None = None
    try:
        exec(compiled, namespace)  # noqa: S102 (running the code is this server's job)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            exit_code = exc.code if isinstance(exc.code, int) else 1
            if not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)
    except BaseException as exc:  # the code's exception (KeyboardInterrupt too) is its answer
        error = _error(exc, 1)
    return error, exit_code


def _reap() -> None:
    """Collect the processes of earlier runs (the orchestrator kills them when a run ends)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _limit(limits: list[list[int]]) -> str | None:
    """Apply a run's rlimits, ``[resource, soft, hard]`` each; why not, when a hard limit would
    have to rise (only a fresh kernel can take a roomier limit). For CPU time, which adds up over
    the kernel's life, ``soft`` is what this run may use on top of what was used so far."""
    for which, soft, hard in limits:
        now = resource.getrlimit(which)
        current = now[1]
        if which == resource.RLIMIT_CPU:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            soft = min(int(usage.ru_utime + usage.ru_stime) + 1 + soft, current)
            hard = current
        elif hard > current:
            return f"rlimit {which} cannot rise from {current} to {hard}"
        if now != (soft, hard):  # (most runs keep the last run's: no system call for those)
            resource.setrlimit(which, (soft, hard))
    return None


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
    _send({"ready": True})
    while True:
        try:
            (length,) = _unpack(">I", _read_exactly(4))
            request = _loads(_read_exactly(length))
        except EOFError:
            return
        _reap()
        refused = _limit(request["limits"])
        if refused is not None:
            _send({"id": request["id"], "refused": refused})
            continue
        try:
            error, exit_code = _run(request["id"], request["code"], namespace)
        except BaseException as exc:  # an interrupt that came late still ends the run
            error, exit_code = _error(exc, 0), None
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _figures()
        _flush()
        _send({"id": request["id"], "error": error, "exitCode": exit_code})


if __name__ == "__main__":
    main()
