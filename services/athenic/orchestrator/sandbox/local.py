"""The local sandbox: a kernel per conversation for Python, else one short-lived process per run,
confined by bubblewrap and rlimits.

With bubblewrap and kernels on, Python runs in the conversation's kernel (kernels.py): its
state is kept between runs. Otherwise each run starts a fresh interpreter (no state is kept
between runs), streams its output to
``on_output`` as it arrives, keeps at most the output limit of each stream in memory, and is
killed at the wall-clock limit or when the awaiting task is cancelled. Without bubblewrap the
backend says so loudly once and runs with rlimits alone (see docs/sandboxes.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import math
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from athenic.orchestrator.errors import RetryableError, TerminalError
from athenic.orchestrator.sandbox import reaping, seccomp, tracebacks
from athenic.orchestrator.sandbox.base import OutputSink, RunSpec, Stream
from athenic.orchestrator.sandbox.budgets import BudgetKeeper, Held, LimitsMode
from athenic.orchestrator.sandbox.cgroups import CgroupError
from athenic.orchestrator.sandbox.figures import FigureCollector
from athenic.orchestrator.sandbox.files import FILES_DIR, OUT_DIR, KernelFiles, host_dir, out_budget, sweep_stale
from athenic.orchestrator.sandbox.isolation import (
    SANDBOX_GID,
    SANDBOX_UID,
    WORKDIR,
    Bubblewrap,
    Limits,
    as_sandbox_user,
    drop_to_sandbox_user,
    find_bubblewrap,
    sandbox_env,
)
from athenic.orchestrator.sandbox.kernel import (
    ROOMY_CPU_SECONDS,
    ROOMY_MEMORY_MIB,
    SERVER_NAME,
    SERVER_SOURCE,
    Kernel,
    KernelFailed,
)
from athenic.orchestrator.sandbox.kernels import Kernels, KernelSettings
from athenic.orchestrator.sandbox.languages import Language, available
from athenic.orchestrator.sandbox.output import OVERFLOW_REST_SECONDS, CappedOutput, OutputForwarder, OverflowPace
from athenic.orchestrator.sandbox.python_env import MATPLOTLIB_BACKEND, MPLCONFIGDIR, SANDBOX_PATH, find_python_env
from athenic.orchestrator.sandbox.watchdog import MIB, DiskBudget, RunBudget, first_breach
from athenic.shared.logging import get_logger
from athenic.shared.messages import Execution, ExecutionError
from athenic.shared.timeouts import within

log = get_logger(__name__)

_CHUNK = 64 * 1024
# After the main process exits, how long its output may still drain (a straggler holding the
# pipes open is not waited for).
_DRAIN_SECONDS = 1.0
# Bounded waits while tearing a run down (the process is already SIGKILLed by then).
_REAP_SECONDS = 2.0
# The run's process budget counts what the sandbox itself adds: bubblewrap and its namespace's init.
BUDGET_OVERHEAD_PROCESSES = 3
_EXIT_POLL_SECONDS = 0.01


@dataclass(frozen=True)
class _Launch:
    argv: list[str]
    kwargs: dict[str, Any]
    cleanup: Callable[[], None] = field(default=lambda: None)
    # rlimits-only: the run's private directory, by which its leftovers are found
    workdir: str | None = None


def figure_env(write_fd: int, *, max_images: int, max_bytes: int) -> dict[str, str]:
    """What the sandbox's matplotlib backend reads (sandbox_python/athenic_sandbox_backend.py)."""
    return {
        "MPLBACKEND": MATPLOTLIB_BACKEND,
        "ATHENIC_FIGURES_FD": str(write_fd),
        "ATHENIC_FIGURES_MAX": str(max_images),
        "ATHENIC_FIGURES_MAX_BYTES": str(max_bytes),
        # One BLAS/OpenMP thread: a thread pool per core would spend the address-space limit
        # on stacks and buffers (numpy could not even import under 256 MiB) and count against
        # the process limit on a many-core node.
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


class _FigurePipe:
    """The pipe a Python run hands its matplotlib figures back through (figures.py)."""

    def __init__(self, collector: FigureCollector, *, max_images: int, max_bytes: int) -> None:
        self.collector = collector
        self._read_fd, self.write_fd = os.pipe()
        self._transport: asyncio.ReadTransport | None = None
        self._reader = asyncio.StreamReader(limit=_CHUNK)
        self.env = figure_env(self.write_fd, max_images=max_images, max_bytes=max_bytes)

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        reader = self._reader
        self._transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(self._read_fd, "rb", buffering=0))

    async def pump(self) -> None:
        pace = OverflowPace()
        while chunk := await self._reader.read(_CHUNK):
            self.collector.feed(chunk)
            if pace.due(len(chunk), overflowing=self.collector.dropped > 0):
                await asyncio.sleep(OVERFLOW_REST_SECONDS)
        self.collector.finish()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        elif self._read_fd >= 0:
            os.close(self._read_fd)
        self._read_fd = -1


class LocalSandbox:
    name = "local"

    def __init__(
        self,
        *,
        output_limit_bytes: int,
        tmp_mib: int = 64,
        max_processes: int = 64,
        bwrap_path: str | None = None,
        require_isolation: bool = False,
        isolation_required_because: str | None = None,
        python_env: str | None = None,
        max_images: int = 4,
        image_bytes: int = 256 * 1024,
        limits_mode: LimitsMode = "auto",
        kernels: KernelSettings | None = None,
    ) -> None:
        """``python_env``: the sandbox's Python environment (python_env.py); None runs the bare
        interpreter without a word, a path where no environment is runs it with a warning.
        ``kernels``: keep a kernel per conversation for Python (needs bubblewrap; None: one
        process per run)."""
        self._output_limit = output_limit_bytes
        self._max_images = max_images
        self._image_bytes = image_bytes
        self.tmp_mib = tmp_mib
        self._max_processes = max_processes
        self._languages = available()
        self._running: set[asyncio.subprocess.Process] = set()
        # the run-wide budgets: a cgroup per run where one can be made, else the watchdog (budgets.py)
        self.budgets = BudgetKeeper(limits_mode)
        log.info("local sandbox budgets runs", mechanism=self.budgets.mechanism, detail=self.budgets.detail)
        self.languages: frozenset[str] = frozenset(self._languages)
        self.bubblewrap, why = find_bubblewrap(bwrap_path)
        self.subreaper = reaping.become_subreaper()
        if (stale := sweep_stale()) > 0:
            log.info("host folders of runs that an earlier process left were removed", count=stale)
        if self.bubblewrap is None:
            if require_isolation:
                because = isolation_required_because or "ATHENIC_SANDBOX_REQUIRE_ISOLATION is set"
                raise TerminalError(f"{because} but {why}")
            log.warning(
                "LOCAL SANDBOX IS NOT ISOLATED: running code with rlimits alone, "
                "with the network and the filesystem of this host; install bubblewrap",
                reason=why,
                same_uid_as_orchestrator=os.geteuid() != 0,
            )
            if os.geteuid() != 0:
                # The code runs as our uid: make our /proc entries (environ, mem) root-owned and
                # unreadable to it, as they are to other users.
                _set_not_dumpable()
        else:
            log.info("local sandbox isolated by bubblewrap", detail=why)
        self.python_env = None
        if python_env is not None and "python" in self._languages:
            self.python_env, why = find_python_env(python_env)
            if self.python_env is None:
                log.warning(
                    "LOCAL SANDBOX HAS NO PYTHON LIBRARIES: running the bare /usr/bin/python3 "
                    "(standard library only: numpy, pandas, matplotlib... will not import); "
                    "run `make sandbox-python` or set ATHENIC_SANDBOX_PYTHON_ENV",
                    reason=why,
                )
            else:
                log.info("local sandbox runs Python from its own environment", detail=why)
        self.kernels: Kernels | None = None
        if kernels is not None and kernels.max_kernels > 0 and "python" in self._languages:
            if self.bubblewrap is None:
                log.warning("local sandbox keeps no kernels without bubblewrap: each Python run starts afresh")
            else:
                # a kernel's run-wide budget is the watchdog's (its processes outlive one run's cgroup)
                self.kernels = Kernels(self.start_kernel, self.budgets.watchdog, kernels)

    @property
    def isolated(self) -> bool:
        return self.bubblewrap is not None

    def prepare(self, tenant: str, client_id: str, language: str) -> None:
        """(Nothing to look up: a conversation's kernel, if any, is in this process.)"""

    async def run(self, spec: RunSpec, on_output: OutputSink | None = None) -> Execution:
        language = self._languages.get(spec.language)
        if language is None:
            return Execution(
                language=spec.language, code=spec.code, backend=self.name,
                error=ExecutionError(name="UnsupportedLanguage",
                                     value=f"the local sandbox runs {', '.join(sorted(self.languages))}, "
                                           f"not {spec.language!r}"),
            )
        limits = Limits(cpu_seconds=math.ceil(spec.timeout_seconds) + 1, memory_mib=spec.memory_mib,
                        file_mib=self.tmp_mib, processes=self._max_processes)
        reaping.ensure_reaper()
        if self.kernels is not None and language.name == "python":
            try:
                return await self.kernels.run(spec, limits, on_output)
            except KernelFailed as exc:
                raise RetryableError(f"the local sandbox's kernel failed: {exc}") from exc
        started = time.monotonic()
        try:
            held = self.budgets.apply(RunBudget(
                memory_bytes=limits.memory_mib * MIB, processes=limits.processes + BUDGET_OVERHEAD_PROCESSES,
                cpu_seconds=float(limits.cpu_seconds)))
        except CgroupError as exc:
            raise RetryableError(f"could not start the local sandbox: {exc}") from exc
        figures = self._figure_pipe() if language.name == "python" and self.python_env is not None else None
        try:
            if figures is not None:
                await figures.open()
            # conversation files (sandbox/files.py): fetched to the host before the sandbox starts
            files_dir = await spec.workspace.files_dir(owner=_sandbox_owner()) if spec.workspace else None
            launch = self._launch(spec, language, limits, figures, files_dir)
        except BaseException:
            if figures is not None:
                os.close(figures.write_fd)
                figures.close()
            await held.release()
            raise
        if launch.workdir is not None:
            reaping.LIVE_WORKDIRS.add(launch.workdir)
        try:
            proc = await asyncio.create_subprocess_exec(
                *launch.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                **_entering(held, launch.kwargs),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            reaping.LIVE_WORKDIRS.discard(launch.workdir or "")
            _abandon(launch, figures)
            await held.release()
            raise RetryableError(f"could not start the local sandbox: {exc}") from exc
        finally:
            # (the sandbox holds its own copies now; ours would keep the figure pipe open forever)
            if "pass_fds" in launch.kwargs:
                for fd in launch.kwargs["pass_fds"]:
                    os.close(fd)
        self._running.add(proc)
        reaping.OWNED.add(proc.pid)
        held.watch(proc.pid)
        try:
            disk = out_budget(os.path.join(files_dir, "out"), spec.workspace, limits.file_mib) if files_dir else None
            return await self._supervise(proc, spec, language, limits, started, on_output, figures,
                                         held, lambda: _kill_leftovers(launch), disk)
        finally:
            await held.release()
            self._running.discard(proc)
            if proc.returncode is not None:  # else asyncio's watcher still waits for it
                reaping.OWNED.discard(proc.pid)
            reaping.LIVE_WORKDIRS.discard(launch.workdir or "")
            launch.cleanup()
            if figures is not None:
                figures.close()

    async def aclose(self) -> None:
        """Kill whatever still runs (a run's own task normally does this itself) and every kernel."""
        if self.kernels is not None:
            await self.kernels.aclose()
        for proc in list(self._running):
            _kill(proc)
        await self.budgets.aclose()

    async def _supervise(
        self,
        proc: asyncio.subprocess.Process,
        spec: RunSpec,
        language: Language,
        limits: Limits,
        started: float,
        on_output: OutputSink | None,
        figures: _FigurePipe | None,
        held: Held,
        kill_leftovers: Callable[[], Awaitable[None]],
        disk: DiskBudget | None,
    ) -> Execution:
        assert proc.stdout is not None
        assert proc.stderr is not None
        stdout, stderr = CappedOutput(self._output_limit), CappedOutput(self._output_limit)
        forward = OutputForwarder(on_output)
        pumps = [
            asyncio.create_task(_pump(proc.stdout, stdout, "stdout", forward)),
            asyncio.create_task(_pump(proc.stderr, stderr, "stderr", forward)),
        ]
        if figures is not None:
            pumps.append(asyncio.create_task(figures.pump()))
        timed_out = False
        # the run's totals over all its processes (the rlimits bind each process alone), and
        # what it writes into files/out
        breach = first_breach(held.breach, self.budgets.watchdog.watch_disk(disk) if disk is not None else None)
        stopped: ExecutionError | None = None
        try:
            async with asyncio.timeout(spec.timeout_seconds):
                exited = asyncio.ensure_future(_exited(proc))
                watched: list[asyncio.Future[Any]] = [exited, breach]
                try:
                    await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    exited.cancel()
                if breach.done() and not breach.cancelled():
                    stopped = breach.result()
                    _kill(proc)
                # The run is over when its main process is: what it left behind goes now (and
                # with it the pipes it held open).
                await kill_leftovers()
                await asyncio.wait(pumps, timeout=_DRAIN_SECONDS)
            # a run the kernel stopped (an OOM kill) may end before the next reading of its counters
            stopped = stopped or _memory_verdict(held)
        except TimeoutError:
            # (the limit may also fall while the output of a finished process drains)
            timed_out = proc.returncode is None
        finally:
            # Runs on cancellation too: nothing of the run survives its awaiting task.
            _kill(proc)
            if disk is not None:
                self.budgets.watchdog.forget_disk(disk)
            await kill_leftovers()
            with contextlib.suppress(TimeoutError):
                await asyncio.shield(within(proc.wait(), _REAP_SECONDS))
            await _finish(pumps)
        duration_ms = int((time.monotonic() - started) * 1000)
        stderr_text = stderr.text()
        status = self._status(proc.returncode)
        return Execution(
            language=spec.language,
            code=spec.code,
            stdout=stdout.text(),
            stderr=stderr_text,
            error=stopped or self._explain(status, stderr_text, language, limits, spec, timed_out),
            exit_code=status,
            duration_ms=duration_ms,
            timed_out=timed_out,
            truncated=stdout.truncated or stderr.truncated,
            results=[] if figures is None else figures.collector.results(),
            results_dropped=0 if figures is None else figures.collector.dropped,
            backend=self.name,
        )

    async def start_kernel(self) -> Kernel:
        """A fresh kernel under bubblewrap, with roomy limits until a run applies its own."""
        bwrap = self.bubblewrap
        assert bwrap is not None
        reaping.ensure_reaper()
        server = os.memfd_create("athenic-kernel", os.MFD_CLOEXEC)
        os.write(server, SERVER_SOURCE.read_bytes())
        os.lseek(server, 0, os.SEEK_SET)
        pipes = [os.pipe() for _ in range(5)]  # stdin, stdout, stderr, control, figures
        (stdin_r, stdin_w), (out_r, out_w), (err_r, err_w), (ctl_r, ctl_w), (fig_r, fig_w) = pipes
        child_ends = [stdin_r, out_w, err_w, ctl_w, fig_w]
        fds = [server, ctl_w, fig_w]
        seccomp_fd = None
        if bwrap.seccomp is not None:
            seccomp_fd = seccomp.filter_fd(bwrap.seccomp)
            fds.append(seccomp_fd)
        language = self._languages["python"]
        command: tuple[str, ...] = language.argv
        binds: tuple[tuple[str, str], ...] = ()
        tmp_files: tuple[tuple[int, str], ...] = ()
        env = {"ATHENIC_KERNEL_FD": str(ctl_w)}
        if self.python_env is not None:
            command = (self.python_env.sandbox_python, *language.argv[1:])
            binds = ((self.python_env.root, SANDBOX_PATH),)
            env |= {**figure_env(fig_w, max_images=self._max_images, max_bytes=self._image_bytes),
                    "MPLCONFIGDIR": MPLCONFIGDIR}
            if self.python_env.font_cache is not None:
                cache = os.open(self.python_env.font_cache, os.O_RDONLY | os.O_CLOEXEC)
                fds.append(cache)
                tmp_files = ((cache, f"{MPLCONFIGDIR}/{os.path.basename(self.python_env.font_cache)}"),)
        limits = Limits(cpu_seconds=ROOMY_CPU_SECONDS, memory_mib=ROOMY_MEMORY_MIB, file_mib=self.tmp_mib,
                        processes=self._max_processes)
        # conversation files: the kernel's files/ is a host folder each run refills (sandbox/files.py)
        files = KernelFiles(_sandbox_owner())
        binds += ((files.root, f"{WORKDIR}/{FILES_DIR}"),)
        argv = bwrap.argv(script_fd=server, script_name=SERVER_NAME, tmp_mib=self.tmp_mib, limits=limits,
                          command=command, seccomp_fd=seccomp_fd, ro_binds=binds, tmp_files=tmp_files, extra_env=env,
                          rw_binds=((files.out, f"{WORKDIR}/{OUT_DIR}"),))
        argv, switch = as_sandbox_user(argv)
        kwargs: dict[str, Any] = {"pass_fds": tuple(fds), "env": {}, "cwd": "/", **switch}
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=stdin_r, stdout=out_w, stderr=err_w, start_new_session=True, **kwargs)
        except OSError as exc:
            for fd in [stdin_w, out_r, err_r, ctl_r, fig_r]:
                os.close(fd)
            files.close()
            raise KernelFailed(f"could not start a kernel: {exc}") from exc
        finally:
            for fd in {*fds, *child_ends}:
                os.close(fd)
        reaping.OWNED.add(proc.pid)
        kernel = Kernel(proc, stdin_fd=stdin_w, stdout_fd=out_r, stderr_fd=err_r, control_fd=ctl_r,
                        figures_fd=fig_r, output_limit=self._output_limit, max_images=self._max_images,
                        image_bytes=self._image_bytes)
        kernel.files = files
        try:
            await kernel.wait_ready()
        except BaseException:
            # (a start cancelled by a shutdown too: no kernel is left behind)
            await asyncio.shield(kernel.aclose())
            raise
        return kernel

    def _figure_pipe(self) -> _FigurePipe:
        collector = FigureCollector(max_images=self._max_images, max_bytes=self._image_bytes)
        return _FigurePipe(collector, max_images=self._max_images, max_bytes=self._image_bytes)

    def _status(self, returncode: int | None) -> int | None:
        """Exit status, negative for a signal as Python reports it (bwrap reports 128 + signal)."""
        if returncode is not None and self.isolated and returncode > 128:
            return -(returncode - 128)
        return returncode

    @staticmethod
    def _explain(status: int | None, stderr: str, language: Language, limits: Limits, spec: RunSpec,
                 timed_out: bool) -> ExecutionError | None:
        if timed_out:
            return tracebacks.timeout_error(spec.timeout_seconds)
        if status is None or status == 0:
            return None
        parsed = language.parse_error(stderr)
        if parsed is not None and parsed.name == "MemoryError" and not parsed.value:
            return msgspec.structs.replace(
                parsed, value=f"the code ran out of memory (the sandbox's limit is {limits.memory_mib} MiB)")
        if parsed is not None:
            return parsed
        if status < 0:
            return tracebacks.signal_error(-status, cpu_seconds=limits.cpu_seconds, memory_mib=limits.memory_mib)
        return tracebacks.exit_error(status)

    def _launch(self, spec: RunSpec, language: Language, limits: Limits, figures: _FigurePipe | None,
                files_dir: str | None = None) -> _Launch:
        if self.bubblewrap is not None:
            return self._launch_isolated(self.bubblewrap, spec, language, limits, figures, files_dir)
        return self._launch_bare(spec, language, limits, figures, files_dir)

    def _launch_isolated(self, bwrap: Bubblewrap, spec: RunSpec, language: Language, limits: Limits,
                         figures: _FigurePipe | None, files_dir: str | None = None) -> _Launch:
        script = os.memfd_create("athenic-code", os.MFD_CLOEXEC)
        os.write(script, spec.code.encode("utf-8", errors="replace"))
        os.lseek(script, 0, os.SEEK_SET)
        fds = [script]
        seccomp_fd = None
        if bwrap.seccomp is not None:
            seccomp_fd = seccomp.filter_fd(bwrap.seccomp)
            fds.append(seccomp_fd)
        command = language.argv
        binds: tuple[tuple[str, str], ...] = ()
        tmp_files: tuple[tuple[int, str], ...] = ()
        env: dict[str, str] = {}
        if figures is not None and self.python_env is not None:
            # the environment read-only at a fixed path; its python links to /usr/bin/python3
            command = (self.python_env.sandbox_python, *language.argv[1:])
            binds = ((self.python_env.root, SANDBOX_PATH),)
            env = {**figures.env, "MPLCONFIGDIR": MPLCONFIGDIR}
            fds.append(figures.write_fd)
            if self.python_env.font_cache is not None:
                cache = os.open(self.python_env.font_cache, os.O_RDONLY | os.O_CLOEXEC)
                fds.append(cache)
                tmp_files = ((cache, f"{MPLCONFIGDIR}/{os.path.basename(self.python_env.font_cache)}"),)
        rw_binds: tuple[tuple[str, str], ...] = ()
        if files_dir is not None:  # conversation files: read-only at files/, the run's results at files/out
            binds += ((files_dir, f"{WORKDIR}/{FILES_DIR}"),)
            rw_binds = ((os.path.join(files_dir, "out"), f"{WORKDIR}/{OUT_DIR}"),)
        argv = bwrap.argv(script_fd=script, script_name=language.script, tmp_mib=self.tmp_mib,
                          limits=limits, command=command, seccomp_fd=seccomp_fd,
                          ro_binds=binds, tmp_files=tmp_files, extra_env=env, rw_binds=rw_binds)
        argv, switch = as_sandbox_user(argv)
        return _Launch(argv, {"pass_fds": tuple(fds), "env": {}, "cwd": "/", **switch})

    def _launch_bare(self, spec: RunSpec, language: Language, limits: Limits,
                     figures: _FigurePipe | None, files_dir: str | None = None) -> _Launch:
        workdir = host_dir("sandbox")
        if files_dir is not None:  # conversation files (not read-only here: rlimits alone cannot)
            os.symlink(files_dir, os.path.join(workdir, FILES_DIR))
        path = os.path.join(workdir, language.script)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(spec.code)
        command = language.argv
        env = sandbox_env(workdir)
        kwargs: dict[str, Any] = {}
        owned = [workdir, path]
        if figures is not None and self.python_env is not None:
            command = (self.python_env.python, *language.argv[1:])
            config = os.path.join(workdir, ".matplotlib")
            os.mkdir(config)
            owned.append(config)
            if self.python_env.font_cache is not None:
                owned.append(shutil.copy(self.python_env.font_cache, config))
            env = {**env, **figures.env, "MPLCONFIGDIR": config}
            kwargs["pass_fds"] = (figures.write_fd,)
        switch = drop_to_sandbox_user()
        if switch:
            for owned_path in owned:
                os.chown(owned_path, SANDBOX_UID, SANDBOX_GID)
        # The process limit counts every process of the uid: apply it only to the sandbox's own uid.
        rlimits = limits.rlimits(with_processes=bool(switch))

        def apply_limits() -> None:
            import resource

            for which, values in rlimits:
                resource.setrlimit(which, values)

        return _Launch(
            [*command, path],
            {"env": env, "cwd": workdir, "preexec_fn": apply_limits, **kwargs, **switch},
            cleanup=lambda: shutil.rmtree(workdir, ignore_errors=True),
            workdir=workdir,
        )


def _entering(held: Held, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The launch's subprocess arguments with the run's first process joining its cgroup before it
    executes anything: it joins as we are (a root orchestrator's sandbox uid could not), then drops
    to the sandbox's uid itself, then applies the launch's own preexec step (rlimits)."""
    join = held.preexec
    if join is None:
        return kwargs
    kwargs = dict(kwargs)
    uid, gid = kwargs.pop("user", None), kwargs.pop("group", None)
    extra_groups = kwargs.pop("extra_groups", None)
    then = kwargs.pop("preexec_fn", None)

    def enter() -> None:
        join()
        if extra_groups is not None:
            os.setgroups(extra_groups)
        if gid is not None:
            os.setregid(gid, gid)
        if uid is not None:
            os.setreuid(uid, uid)
        if then is not None:
            then()

    return {**kwargs, "preexec_fn": enter}


def _memory_verdict(held: Held) -> ExecutionError | None:
    verdict = held.verdict()
    return verdict if verdict is not None and verdict.name == "MemoryBudgetExceeded" else None


def _abandon(launch: _Launch, figures: _FigurePipe | None) -> None:
    launch.cleanup()
    if figures is not None:
        figures.close()


async def _exited(proc: asyncio.subprocess.Process) -> None:
    """Until the process has exited; ``proc.wait()`` also waits for every holder of its pipes to
    close them (Python 3.11), which a process left behind may never do."""
    while proc.returncode is None:  # noqa: ASYNC110 (the exit event is private to asyncio's transport)
        await asyncio.sleep(_EXIT_POLL_SECONDS)


async def _kill_leftovers(launch: _Launch) -> None:
    """Kill (and collect) what an rlimits-only run left behind; bubblewrap's PID namespace does
    this for an isolated one. Shielded: a cancelled run is torn down all the same."""
    if launch.workdir is None:
        return
    uid = SANDBOX_UID if drop_to_sandbox_user() else os.getuid()
    await asyncio.shield(asyncio.to_thread(reaping.kill_leftovers, uid=uid, workdir=launch.workdir,
                                           live_workdirs=reaping.live_workdirs))


def _sandbox_owner() -> int | None:
    """The uid the code runs as when it is not ours (we are root): it must reach the run's files."""
    return SANDBOX_UID if drop_to_sandbox_user() else None


def _set_not_dumpable() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_dumpable = 4
    if libc.prctl(pr_set_dumpable, 0, 0, 0, 0) != 0:
        log.warning("could not protect the orchestrator's /proc entries", errno=ctypes.get_errno())


async def _pump(reader: asyncio.StreamReader, capture: CappedOutput, stream: Stream, forward: OutputForwarder) -> None:
    pace = OverflowPace()
    while chunk := await reader.read(_CHUNK):
        await forward(stream, capture.feed(chunk))
        if pace.due(len(chunk), overflowing=capture.truncated):
            await asyncio.sleep(OVERFLOW_REST_SECONDS)


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    # The session holds bwrap (whose death takes the sandbox's PID namespace with it) or, without
    # bwrap, the interpreter and any children that stayed in its session.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


async def _finish(pumps: list[asyncio.Task[None]]) -> None:
    _, pending = await asyncio.wait(pumps, timeout=_DRAIN_SECONDS)
    for task in pending:
        task.cancel()
    if pending:  # (``wait``, not awaiting each: a cancel of the run itself must not be swallowed here)
        await asyncio.wait(pending)
    for task in pumps:
        if not task.cancelled():
            task.result()  # a pump's own fault is the run's
