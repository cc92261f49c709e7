"""One kernel: a long-lived sandboxed Python interpreter that keeps a conversation's state.

The kernel is the kernel server (sandbox_python/athenic_kernel.py) running under the same
bubblewrap + seccomp confinement as a one-shot run: its own namespaces, uid ``nobody``, a
private ``/tmp`` that is its working directory for its whole life. Its stdout and stderr are
pipes read as they fill during a run (between runs they wait in their pipes); requests go to
its stdin; the end of each run comes back as a frame on a control pipe; figures on the figure
pipe (figures.py), as a one-shot run sends them. The code can write to every one of them: the
control pipe carries only the one frame the server owes, anything else kills the kernel.

A kernel starts with roomy limits (a pooled kernel belongs to no tenant yet); every run
applies the tenant's limits to the running interpreter from the host first (``apply_limits``:
rlimits by ``prlimit``, and the run-wide budget the watchdog enforces over its process tree).
At the time limit the code gets SIGINT (KeyboardInterrupt); if it does not stop within a short
grace, the kernel is killed. When a run ends, the processes it started are killed; its threads
live on inside the interpreter, bounded by its rlimits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import resource
import signal
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from athenic.orchestrator.sandbox import reaping, tracebacks
from athenic.orchestrator.sandbox.base import OutputSink, RunSpec, Stream
from athenic.orchestrator.sandbox.figures import FigureCollector
from athenic.orchestrator.sandbox.files import KernelFiles, out_budget
from athenic.orchestrator.sandbox.isolation import Limits
from athenic.orchestrator.sandbox.output import (
    OVERFLOW_REST_SECONDS,
    CappedOutput,
    OutputForwarder,
    OverflowPace,
)
from athenic.orchestrator.sandbox.watchdog import MIB, RunBudget, Watchdog, first_breach
from athenic.shared.logging import get_logger
from athenic.shared.messages import Execution, ExecutionError
from athenic.shared.timeouts import within

log = get_logger(__name__)

SERVER_SOURCE = Path(__file__).parent / "sandbox_python" / "athenic_kernel.py"
SERVER_NAME = "kernel.py"
# a kernel that does not stop within this long of its SIGINT is killed
INTERRUPT_GRACE_SECONDS = 2.0
START_SECONDS = 30.0
# the control frames are small; a bigger one is the code writing garbage to that pipe
_MAX_FRAME = 64 * 1024
_CHUNK = 64 * 1024
# a pipe is read at most this many chunks per turn of the loop, and at a run's end (2 MiB: more
# than a pipe holds, its maximum size being 1 MiB)
_BATCH_CHUNKS = 16
_DRAIN_CHUNKS = 32
_EXIT_SECONDS = 1.0
_KILL_CHILDREN_SECONDS = 2.0
# bubblewrap, its namespace's init and the interpreter: what the kernel itself adds to a run's processes
OVERHEAD_PROCESSES = 3
# the limits a kernel starts with, before any tenant claimed it (lowered by apply_limits)
ROOMY_MEMORY_MIB = 1 << 30
ROOMY_CPU_SECONDS = 1 << 30

STATE_LOST = ("the conversation's kernel stopped during this run; the next run starts a fresh one "
              "(variables, imports and files of earlier runs are gone)")


class KernelFailed(Exception):
    """The kernel could not be started or did not answer as a kernel does."""


class LimitsRefused(Exception):
    """The kernel cannot take the run's limits (a hard limit would rise): it needs replacing."""


@dataclass
class _Pipe:
    """A non-blocking pipe the event loop reads into ``sink``: never for long at a time (a writer
    as fast as the reader would hold the loop), and past the output limit at a bounded pace
    (``overflowing``; output.OverflowPace). A paused pipe is not read: its writer blocks once
    the pipe is full. One that may not be read now (``may_read``) pauses itself, unread, when
    written to."""

    fd: int
    sink: Callable[[bytes], None]
    overflowing: Callable[[], bool] = lambda: False
    may_read: Callable[[], bool] = lambda: True
    eof: asyncio.Event = field(default_factory=asyncio.Event)
    pace: OverflowPace = field(default_factory=OverflowPace)
    _reading: bool = False
    _resting: asyncio.TimerHandle | None = None

    def start(self) -> None:
        os.set_blocking(self.fd, False)
        self.resume()

    def resume(self) -> None:
        self._stop_resting()
        if self.fd >= 0 and not self._reading:
            asyncio.get_running_loop().add_reader(self.fd, self._readable)
            self._reading = True

    def pause(self) -> None:
        self._stop_resting()
        if self._reading:
            self._reading = False
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.fd)

    def _stop_resting(self) -> None:
        if self._resting is not None:
            self._resting.cancel()
            self._resting = None

    def _readable(self) -> None:
        if not self.may_read():
            self.pause()
            return
        for _ in range(_BATCH_CHUNKS):
            size = self._read_one()
            if not size:
                return
            if self.pace.due(size, overflowing=self.overflowing()):
                self.pause()
                self._resting = asyncio.get_running_loop().call_later(OVERFLOW_REST_SECONDS, self.resume)
                return

    def drain(self) -> None:
        """What is in the pipe now (at a run's end, and before the pipe closes): more than a pipe
        holds, and never without end while a thread of the code keeps writing."""
        for _ in range(_DRAIN_CHUNKS):
            if not self._read_one():
                return

    def _read_one(self) -> int:
        """One chunk into the sink; its size (0: nothing there, or the pipe ended)."""
        if self.fd < 0:
            return 0
        try:
            chunk = os.read(self.fd, _CHUNK)
        except BlockingIOError:
            return 0
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            self.sink(b"")  # the end of the pipe
            return 0
        self.sink(chunk)
        return len(chunk)

    def close(self) -> None:
        self.pause()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.eof.set()


@dataclass
class _Run:
    """What one run has captured so far."""

    number: int
    stdout: CappedOutput
    stderr: CappedOutput
    figures: FigureCollector
    forward: OutputForwarder
    pending: list[tuple[Stream, str]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


# the run's end frame (None: the kernel is gone), whether it timed out, a budget it broke
_Ending = tuple[dict[str, Any] | None, bool, ExecutionError | None]


class Kernel:
    def __init__(self, proc: asyncio.subprocess.Process, *, stdin_fd: int, stdout_fd: int, stderr_fd: int,
                 control_fd: int, figures_fd: int, output_limit: int, max_images: int, image_bytes: int) -> None:
        self.proc = proc
        # the kernel's files/ (conversation files in, results out), set by whoever started it
        self.files: KernelFiles | None = None
        self.python_pid = 0
        self._init_pid = 0
        self._resident: frozenset[str] | None = None  # the sandbox's own processes, once ready
        self._home: frozenset[int] = frozenset()  # ... and the same processes by the host's numbers
        self._members: set[int] = set()
        self._bubblewrap_cpu = 0.0
        self.started_at = time.monotonic()
        self.used_at = self.started_at
        self.runs = 0
        # CPU time of the kernel's processes after its last run ended (read by the first idle sweep
        # after it, off the answer's way: None until then), and what that run allowed; what the
        # last run's budget allowed its process tree at once (None: no run yet)
        self.cpu_at_rest: float | None = None
        self.cpu_allowed = 0.0
        self.budget_at_rest: RunBudget | None = None
        self._limits_checked: dict[int, int] | None = None  # the limits /proc last showed it within
        self._output_limit = output_limit
        self._max_images, self._image_bytes = max_images, image_bytes
        self._stdin = stdin_fd
        os.set_blocking(stdin_fd, False)
        self._outbox = bytearray()  # what the server has yet to read of the requests sent
        self._writing = False
        self._frames: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._control_buffer = b""
        # the one frame the server owes: "ready" once, then the end of the run sent (its number);
        # any other frame is the code writing to the control pipe, and the kernel goes
        self._awaiting: str | int | None = "ready"
        self._run: _Run | None = None
        self._killed = False
        self._garbage: str | None = None  # what the kernel sent that no kernel server does
        self._handing: asyncio.Future[None] | None = None  # the last run's files/out, being handed over
        # (what comes while the kernel starts, before any run: read and dropped)
        self._idle_figures = FigureCollector(max_images=0, max_bytes=0)
        self._listening = True  # (the code's output and figures are read during runs: _listen)

        def listening() -> bool:
            return self._listening

        self._pipes = [
            _Pipe(stdout_fd, lambda chunk: self._output("stdout", chunk),
                  overflowing=lambda: self._run is not None and self._run.stdout.truncated, may_read=listening),
            _Pipe(stderr_fd, lambda chunk: self._output("stderr", chunk),
                  overflowing=lambda: self._run is not None and self._run.stderr.truncated, may_read=listening),
            _Pipe(control_fd, self._control),
            _Pipe(figures_fd, lambda chunk: (self._run.figures if self._run else self._idle_figures).feed(chunk),
                  overflowing=lambda: self._run is not None and self._run.figures.dropped > 0, may_read=listening),
        ]
        for pipe in self._pipes:
            pipe.start()

    def _listen(self, listening: bool) -> None:
        """Read the code's output and figures (during a run), or leave them in their pipes (between
        runs: a background thread that writes then waits, and what it wrote opens the next run's
        output, as in a notebook; it costs this process one wake-up: the first write between runs
        pauses the pipe, unread). Most runs leave their pipes quiet: nothing changes on the loop."""
        self._listening = listening
        if listening:
            for pipe in (self._pipes[0], self._pipes[1], self._pipes[3]):
                pipe.resume()

    @property
    def alive(self) -> bool:
        return not self._killed and self.proc.returncode is None and self._pipes[2].fd >= 0

    @property
    def busy(self) -> bool:
        return self._run is not None

    async def wait_ready(self) -> None:
        """Until the server said it is ready; then find its interpreter among the sandbox's processes."""
        try:
            async with asyncio.timeout(START_SECONDS):
                frame = await self._frames.get()
        except TimeoutError:
            frame = None
        if frame is None or frame.get("ready") is not True:
            self.kill()
            raise KernelFailed(f"the kernel did not start (exit status {self.proc.returncode})")
        self.python_pid = await asyncio.to_thread(self._find_interpreter)
        if self.python_pid:
            self._init_pid = reaping.processes().get(self.python_pid, reaping.ProcInfo(0, 0, "")).ppid
            self._resident = self._own_view()
            self._home = frozenset(reaping.tree(self.proc.pid))
            self._bubblewrap_cpu = reaping.cpu_seconds(self.proc.pid)
            self._listen(False)
            return
        self.kill()
        raise KernelFailed("the kernel's interpreter is not among its processes")

    def cpu_used(self) -> float:
        """CPU time of the kernel's own processes so far (a background thread keeps adding to
        it; the processes of a run are gone once it ended: what they used counts once reaped by
        the interpreter or the namespace's init). bubblewrap's own, read once when the kernel was
        ready, stays what it was: it only waits for that init, which outlives every run."""
        return self._bubblewrap_cpu + sum(reaping.cpu_seconds(pid) for pid in (self._init_pid, self.python_pid) if pid)

    def _own_alive(self) -> bool:
        for pid in {self.python_pid, self._init_pid, *self._members}:
            if not pid:
                continue
            fields = reaping.stat_fields(pid)
            if fields and fields[0] != b"Z":
                return True
        return False

    def _find_interpreter(self) -> int:
        table = reaping.processes()
        for pid in sorted(reaping.descendants({self.proc.pid}, table)):
            with contextlib.suppress(OSError):
                # (bubblewrap's own processes carry the same command at the end of theirs)
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if f"/sandbox/{SERVER_NAME}".encode() in argv and b"--unshare-all" not in argv:
                    return pid
        return 0

    def apply_limits(self, limits: Limits) -> tuple[list[tuple[int, int, int]], RunBudget]:
        """A run's limits: the rlimits the kernel binds itself to before the code runs (checked
        from the host when the run ends, ``limits_hold``), and the budget over its whole process
        tree for the watchdog. The one place a claim's limits are turned into the kernel's."""
        rlimits = [(which, soft, hard) for which, (soft, hard) in limits.rlimits(with_processes=True)]
        rlimits = [(which, limits.cpu_seconds, 0) if which == resource.RLIMIT_CPU else (which, soft, hard)
                   for which, soft, hard in rlimits]
        return rlimits, RunBudget(memory_bytes=limits.memory_mib * MIB,
                                  processes=limits.processes + OVERHEAD_PROCESSES,
                                  cpu_seconds=self.cpu_used() + limits.cpu_seconds)

    def _must_rise(self, rlimits: list[tuple[int, int, int]]) -> bool:
        """Whether a run's hard limit is above the interpreter's, as /proc shows it: the kernel
        server refuses a run only then (athenic_kernel._limit), so a refusal without it is forged."""
        hard = _hard_limits(self.python_pid)
        return any(which != resource.RLIMIT_CPU and value > hard.get(which, -1) for which, _soft, value in rlimits)

    def limits_hold(self, rlimits: list[tuple[int, int, int]]) -> bool:
        """Whether the interpreter's hard limits are (at most) the run's: the server could have
        been tampered with by an earlier run of its conversation.

        A hard limit never rises without CAP_SYS_RESOURCE in the host's user namespace, which
        nothing in the sandbox has: once /proc showed them at most some limits, they are at most
        any limits as high, and /proc is read again only for a run whose limits are lower (the
        tenant's policy tightened)."""
        wanted = {which: value for which, _soft, value in rlimits if which != resource.RLIMIT_CPU}
        checked = self._limits_checked
        if checked is not None and all(which in checked and value >= checked[which] for which, value in wanted.items()):
            return True
        hard = _hard_limits(self.python_pid)
        if all(0 <= hard.get(which, -1) <= value for which, value in wanted.items()):
            self._limits_checked = wanted
            return True
        return False

    async def run(self, spec: RunSpec, limits: Limits, watchdog: Watchdog,
                  on_output: OutputSink | None, *, may_refuse: bool = True) -> Execution:
        """Run the code; ``LimitsRefused`` when the kernel cannot take the run's limits (a hard
        limit would have to rise), unless ``may_refuse`` is False (a fresh kernel, tried after a
        refusal: it refuses only when the code lowered them, and the run fails)."""
        self.runs += 1
        run = _Run(self.runs, CappedOutput(self._output_limit), CappedOutput(self._output_limit),
                   FigureCollector(max_images=self._max_images, max_bytes=self._image_bytes),
                   OutputForwarder(on_output))
        started = time.monotonic()
        if self.files is not None:
            await self._handed(strict=False)  # (an earlier run's, cancelled before its files were handed over)
            await self.files.stage(spec.workspace)
        rlimits, budget = self.apply_limits(limits)
        self._run = run
        self._listen(True)
        disk = out_budget(self.files.out, spec.workspace, limits.file_mib) if self.files is not None else None
        breach = first_breach(watchdog.watch(self.proc.pid, budget),
                              watchdog.watch_disk(disk) if disk is not None else None)
        forwarding = asyncio.create_task(self._forward(run))
        try:
            frame, timed_out, stopped = await self._await_end(run, spec, rlimits, breach)
            if frame is not None and "refused" in frame:
                if may_refuse and self._must_rise(rlimits):
                    raise LimitsRefused(str(frame["refused"]))
                # a refusal of limits the kernel can take (or a second one, from a fresh kernel,
                # which runs no code before its limits are set): the code wrote it
                log.warning("kernel killed: it refused limits it can take")
                self.kill()
                frame, stopped = None, _tampered("the code wrote the kernel's answer (a refusal of the run's limits)")
            if frame is not None and not self.limits_hold(rlimits):
                log.warning("kernel killed: its limits are not the run's")
                self.kill()
                frame, stopped = None, _tampered("the kernel's limits were changed by the code")
        finally:
            watchdog.forget(self.proc.pid)
            if disk is not None:
                watchdog.forget_disk(disk)
            if self.files is not None and not self.files.out_empty():
                # what the run left in files/out, before a dead kernel's folder goes (in a thread: up
                # to the files budget's entries, thousands when one command made them; awaited before
                # the answer, the next run's files and the folder's removal)
                self._handing = asyncio.ensure_future(asyncio.to_thread(self.files.hand_over, spec.workspace))
            if self.alive:
                for pipe in self._pipes:
                    pipe.drain()
                self._listen(False)
                self._kill_children()
            else:
                # (a kernel whose server is gone exits by itself: its own status says how it ended)
                with contextlib.suppress(TimeoutError):
                    await asyncio.shield(within(self.proc.wait(), _EXIT_SECONDS))
                self.kill()
                await self._closed()
            self._run = None
            run.wake.set()
            await forwarding
            self.used_at = time.monotonic()
            self.cpu_at_rest, self.cpu_allowed = None, float(limits.cpu_seconds)
            self.budget_at_rest = RunBudget(memory_bytes=budget.memory_bytes, processes=budget.processes,
                                            cpu_seconds=math.inf)  # (CPU between runs: Kernels._spins)
        await self._handed(strict=True)
        return self._execution(spec, run, frame, timed_out, stopped, limits, int((time.monotonic() - started) * 1000))

    async def _handed(self, *, strict: bool) -> None:
        """Until the last run's files/out is handed over; its fault is the run's when ``strict``
        (the run's own answer waits for it), else logged (a cancelled run's, found by the next)."""
        handing = self._handing
        if handing is None:
            return
        try:
            await asyncio.shield(handing)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if strict:
                raise
            log.warning("a cancelled run's files could not be handed over", error=str(exc) or type(exc).__name__)
        finally:
            if handing.done() and self._handing is handing:
                self._handing = None

    def kill(self) -> None:
        self._killed = True
        if self.proc.returncode is None:
            # bubblewrap leads its own process group. (Not ``proc.kill()`` as well: Popen polls
            # first, and would reap the dying process before asyncio's watcher, losing its status.)
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except PermissionError:
                self.proc.kill()
            except ProcessLookupError:
                pass

    async def aclose(self) -> None:
        # (what the namespace holds dies a moment after bubblewrap: waited for below)
        self._members = reaping.tree(self.proc.pid) - {self.proc.pid}
        self.kill()
        await self._closed()

    async def _closed(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.shield(within(self.proc.wait(), 5))
        if self.proc.returncode is not None:
            reaping.OWNED.discard(self.proc.pid)
        # bubblewrap's init and the interpreter die with their namespace, a moment after bubblewrap
        deadline = time.monotonic() + _EXIT_SECONDS
        while self._own_alive() and time.monotonic() < deadline:  # noqa: ASYNC110 (no event for a non-child's exit)
            await asyncio.sleep(0.01)
        for pipe in self._pipes:
            pipe.drain()
            pipe.close()
        if self.files is not None:
            await self._handed(strict=False)
            self.files.close()
        if self._stdin >= 0:
            self._stop_writing()
            self._outbox.clear()
            os.close(self._stdin)
            self._stdin = -1

    async def _await_end(self, run: _Run, spec: RunSpec, rlimits: list[tuple[int, int, int]],
                         breach: asyncio.Future[ExecutionError]) -> _Ending:
        """The run's end frame (None: the kernel is gone), whether it timed out, a budget it broke."""
        self._awaiting = run.number
        self._send({"id": run.number, "code": spec.code, "limits": rlimits})
        ended = asyncio.ensure_future(self._end_frame(run.number))
        watched: list[asyncio.Future[Any]] = [ended, breach]
        try:
            done, _ = await asyncio.wait(watched, timeout=spec.timeout_seconds,
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # the awaiting task was cancelled: the code stops (interrupted, else killed) before it goes on
            await asyncio.shield(self._interrupt(ended))
            raise
        try:
            if breach in done and not breach.cancelled():
                self.kill()
                return None, False, breach.result()
            if ended in done:
                return ended.result(), False, None
            return await self._interrupt(ended), True, None
        finally:
            ended.cancel()

    async def _interrupt(self, ended: asyncio.Future[dict[str, Any] | None]) -> dict[str, Any] | None:
        """SIGINT the code; the kernel is killed unless the run ends within the grace."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.python_pid, signal.SIGINT)
        done, _ = await asyncio.wait([ended], timeout=INTERRUPT_GRACE_SECONDS)
        frame = ended.result() if ended in done else None
        if frame is None:
            self.kill()
            ended.cancel()
        return frame

    async def _end_frame(self, number: int) -> dict[str, Any] | None:
        while (frame := await self._frames.get()) is not None:
            if frame.get("id") == number:
                return frame
        return None

    def _send(self, request: dict[str, Any]) -> None:
        """Queue a request for the server and write what the pipe takes now; the loop writes the
        rest as the server reads it. Never a blocking write: a kernel that does not read (code
        still running after it wrote its run's end itself) would hold the event loop, every
        conversation of this orchestrator with it; its run's time limit ends it instead."""
        data = json.dumps(request).encode()
        self._outbox += struct.pack(">I", len(data)) + data
        self._write_outbox()

    def _write_outbox(self) -> None:
        try:
            while self._outbox:
                del self._outbox[:os.write(self._stdin, self._outbox)]
        except BlockingIOError:
            if not self._writing:
                asyncio.get_running_loop().add_writer(self._stdin, self._write_outbox)
                self._writing = True
            return
        except OSError:
            self._outbox.clear()
            self.kill()
        self._stop_writing()

    def _stop_writing(self) -> None:
        if self._writing:
            self._writing = False
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_writer(self._stdin)

    def _output(self, stream: Stream, chunk: bytes) -> None:
        run = self._run
        if run is None:
            return
        text = (run.stdout if stream == "stdout" else run.stderr).feed(chunk)
        if text:
            run.pending.append((stream, text))
            run.wake.set()

    async def _forward(self, run: _Run) -> None:
        while True:
            await run.wake.wait()
            run.wake.clear()
            pending, run.pending = run.pending, []
            for stream, text in pending:
                await run.forward(stream, text)
            if self._run is not run and not run.pending:
                return

    def _control(self, chunk: bytes) -> None:
        if not chunk:
            self._frames.put_nowait(None)
            return
        if self._killed:  # (what a killed kernel still writes is dropped)
            return
        self._control_buffer += chunk
        while len(self._control_buffer) >= 4:
            (length,) = struct.unpack(">I", self._control_buffer[:4])
            if length > _MAX_FRAME:
                self._broken("a control frame over the size limit")
                return
            if len(self._control_buffer) < 4 + length:
                return
            raw, self._control_buffer = self._control_buffer[4:4 + length], self._control_buffer[4 + length:]
            try:
                frame = json.loads(raw)
            except ValueError:
                frame = None
            if not isinstance(frame, dict):
                self._broken("a control frame that is not a JSON object")
                return
            if not self._owed(frame):
                self._broken("a control frame the server did not owe")
                return
            self._awaiting = None
            self._frames.put_nowait(frame)

    def _owed(self, frame: dict[str, Any]) -> bool:
        if self._awaiting == "ready":
            return frame.get("ready") is True
        number = frame.get("id")
        return type(number) is int and number == self._awaiting

    def _broken(self, why: str) -> None:
        log.warning("kernel killed: it sent garbage", reason=why)
        self._garbage = why
        self._control_buffer = b""
        self.kill()
        self._frames.put_nowait(None)

    def quiet_tree(self) -> set[int] | None:
        """The kernel's process tree when its namespace holds just what it held when the kernel
        was ready (bubblewrap, its init, the interpreter), read without a scan of every process
        on the machine; None when it holds more, or where this process may not look."""
        if self._resident is not None and self._own_view() == self._resident:
            return set(self._home)
        return None

    def _own_view(self) -> frozenset[str] | None:
        """The processes the sandbox's own /proc lists (its PID namespace's numbers), read through
        the interpreter's root; None where this process may not look (not root). The sandboxed
        code cannot hide one there: it has no capability to mount or chroot."""
        try:
            return frozenset(entry for entry in os.listdir(f"/proc/{self.python_pid}/root/proc") if entry.isdigit())
        except OSError:
            return None

    def _kill_children(self) -> None:
        """Kill what the run started (bubblewrap, its init and the interpreter stay); a kernel
        whose leftovers keep coming back (a fork bomb outrunning the kill) is killed whole.
        When the sandbox's namespace holds just what it held when the kernel was ready, nothing
        was left: no scan of every process on the machine."""
        if self.quiet_tree() is not None:
            return
        deadline = time.monotonic() + _KILL_CHILDREN_SECONDS
        keep = {self.proc.pid, self.python_pid, self._init_pid}
        while time.monotonic() < deadline:
            victims = reaping.tree(self._init_pid, zombies=False) - keep
            if not victims:
                return
            for pid in victims:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.001)
        log.warning("kernel killed: the processes of its run would not stop")
        self.kill()

    def _execution(self, spec: RunSpec, run: _Run, frame: dict[str, Any] | None, timed_out: bool,
                   stopped: ExecutionError | None, limits: Limits, duration_ms: int) -> Execution:
        run.figures.finish()
        error: ExecutionError | None = stopped
        status: int | None
        notice: str | None = None
        if frame is None:
            status = _status(self.proc.returncode)
            notice = STATE_LOST
            if error is None and self._garbage is not None:
                error = _tampered(f"the kernel sent {self._garbage}: the code wrote to its control pipe")
            elif error is None and timed_out:
                error = tracebacks.timeout_error(spec.timeout_seconds)
            elif error is None:
                error = _death(status, limits)
        else:
            error, status = _frame_error(frame, limits)
            if timed_out:
                error = tracebacks.timeout_error(spec.timeout_seconds)
            if not self.alive:
                notice = STATE_LOST
            if self._garbage is not None:  # (found by the drain at the end: the frame may be the code's)
                error, status = _tampered(f"the kernel sent {self._garbage}: the code wrote to its control pipe"), 1
        return Execution(
            language=spec.language, code=spec.code, stdout=run.stdout.text(), stderr=run.stderr.text(),
            error=error, exit_code=status, duration_ms=duration_ms, timed_out=timed_out,
            truncated=run.stdout.truncated or run.stderr.truncated,
            results=run.figures.results(), results_dropped=run.figures.dropped, backend="local", notice=notice,
        )


def _tampered(why: str) -> ExecutionError:
    return ExecutionError(name="KernelTampered", value=why)


def _frame_error(frame: dict[str, Any], limits: Limits) -> tuple[ExecutionError | None, int]:
    """The error and exit status a run's end frame reports (the frame may be forged: checked)."""
    raw = frame.get("error")
    exit_code = frame.get("exitCode")
    if isinstance(raw, dict):
        try:
            error = msgspec.convert(raw, ExecutionError)
        except msgspec.ValidationError:
            error = ExecutionError(name="KernelError", value="the kernel reported an error it could not describe")
        if error.name == "MemoryError" and not error.value:
            error = msgspec.structs.replace(
                error, value=f"the code ran out of memory (the sandbox's limit is {limits.memory_mib} MiB)")
        return error, 1
    if isinstance(exit_code, int) and not isinstance(exit_code, bool) and exit_code != 0:
        return tracebacks.exit_error(exit_code), exit_code
    return None, 0


def _death(status: int | None, limits: Limits) -> ExecutionError:
    if status is not None and status < 0:
        return tracebacks.signal_error(-status, cpu_seconds=limits.cpu_seconds, memory_mib=limits.memory_mib)
    if status is not None:
        return tracebacks.exit_error(status)
    return ExecutionError(name="KernelDied", value="the kernel stopped answering")


def _status(returncode: int | None) -> int | None:
    """bubblewrap reports a signal as 128 + its number; Python's convention is negative."""
    if returncode is not None and returncode > 128:
        return -(returncode - 128)
    return returncode


_LIMIT_NAMES = {"Max address space": resource.RLIMIT_AS, "Max file size": resource.RLIMIT_FSIZE,
                "Max open files": resource.RLIMIT_NOFILE, "Max processes": resource.RLIMIT_NPROC,
                "Max core file size": resource.RLIMIT_CORE}


def _hard_limits(pid: int) -> dict[int, int]:
    """The hard limits /proc shows for a process (-1: unlimited or unreadable)."""
    found: dict[int, int] = {}
    try:
        fd = os.open(f"/proc/{pid}/limits", os.O_RDONLY)
    except OSError:
        return found
    try:
        text = os.read(fd, 8192).decode(errors="replace")
    except OSError:
        return found
    finally:
        os.close(fd)
    for line in text.splitlines()[1:]:
        which = _LIMIT_NAMES.get(line[:26].rstrip())
        if which is not None:
            value = line[26:].split()[1]
            found[which] = int(value) if value.isdigit() else -1
    return found


