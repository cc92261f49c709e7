"""How a local run is confined: the bubblewrap command line and the resource limits.

bubblewrap gives the code its own user, PID, network, IPC, UTS and cgroup namespaces (no
network at all, a fresh /proc that shows only its own processes), the system directories
read-only, a size-limited private /tmp, an empty environment, and a seccomp filter
(seccomp.py). Resource limits bound CPU time, address space, file size, open files and
processes.

``RLIMIT_NPROC`` counts the processes of a user *per user namespace*, and never binds uid 0:
so an orchestrator running as root starts bubblewrap as an unprivileged uid, and the process
limit is set inside the sandbox (by ``prlimit``) where it counts that sandbox's processes only.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import subprocess
from dataclasses import dataclass

from athenic.orchestrator.sandbox import seccomp

# `nobody`: owns nothing on the host, so the code can signal or read no one's processes.
SANDBOX_UID = 65534
SANDBOX_GID = 65534
SCRIPT_DIR = "/sandbox"
WORKDIR = "/tmp"  # noqa: S108 (a private tmpfs inside the sandbox)
PATH = "/usr/local/bin:/usr/bin:/bin"
SHM_MIB = 16
# The system's top-level directories besides /usr: symlinks into /usr on merged-/usr systems.
_SYSTEM_ROOTS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What of /etc an interpreter needs; the rest of /etc (and all of /run, /var, /home...) stays out.
_ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives", "/etc/nsswitch.conf",
              "/etc/passwd", "/etc/group", "/etc/mime.types")


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int
    memory_mib: int
    file_mib: int
    processes: int
    open_files: int = 256

    def rlimits(self, *, with_processes: bool) -> list[tuple[int, tuple[int, int]]]:
        mib = 1024 * 1024
        # soft < hard: the soft CPU limit sends SIGXCPU (a reason we can report), the hard one SIGKILL
        limits = [
            (resource.RLIMIT_CPU, (self.cpu_seconds, self.cpu_seconds + 1)),
            (resource.RLIMIT_AS, (self.memory_mib * mib, self.memory_mib * mib)),
            (resource.RLIMIT_FSIZE, (self.file_mib * mib, self.file_mib * mib)),
            (resource.RLIMIT_NOFILE, (self.open_files, self.open_files)),
            (resource.RLIMIT_CORE, (0, 0)),
        ]
        if with_processes:
            limits.append((resource.RLIMIT_NPROC, (self.processes, self.processes)))
        return limits

    def prlimit_argv(self, prlimit: str) -> list[str]:
        mib = 1024 * 1024
        return [
            prlimit,
            f"--cpu={self.cpu_seconds}:{self.cpu_seconds + 1}",
            f"--as={self.memory_mib * mib}",
            f"--fsize={self.file_mib * mib}",
            f"--nofile={self.open_files}",
            f"--nproc={self.processes}",
            "--core=0",
            "--",
        ]


def drop_to_sandbox_user() -> dict[str, object]:
    """Subprocess arguments that start the child as the sandbox uid when we are root."""
    if os.geteuid() != 0:
        return {}
    return {"user": SANDBOX_UID, "group": SANDBOX_GID, "extra_groups": []}


def as_sandbox_user(argv: list[str]) -> tuple[list[str], dict[str, object]]:
    """``argv`` and the subprocess arguments that start it as the sandbox uid when we are root
    (as they are when we are not). Through util-linux's ``setpriv`` where it is here: it drops
    to the uid (real, effective and saved; no supplementary groups) and execs ``argv`` in the
    same process, so the orchestrator starts the child with a vfork. Python's own ``user=`` and
    ``group=`` make it a full fork, a copy of the orchestrator's page tables that held its event
    loop, every conversation's, 8 to 28 ms per kernel start here."""
    if os.geteuid() != 0:
        return argv, {}
    setpriv = _setpriv()
    if setpriv is None:
        return argv, drop_to_sandbox_user()
    return [setpriv, f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_GID}", "--clear-groups", "--", *argv], {}


@functools.cache
def _setpriv() -> str | None:
    return shutil.which("setpriv")


def sandbox_env(home: str) -> dict[str, str]:
    """The whole environment the code sees: nothing of the orchestrator's."""
    return {"PATH": PATH, "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


@dataclass(frozen=True)
class Bubblewrap:
    path: str
    prlimit: str
    # the compiled seccomp filter (seccomp.py); None runs without one
    seccomp: bytes | None = None

    def argv(self, *, script_fd: int, script_name: str, tmp_mib: int, limits: Limits,
             command: tuple[str, ...], seccomp_fd: int | None = None,
             ro_binds: tuple[tuple[str, str], ...] = (), tmp_files: tuple[tuple[int, str], ...] = (),
             extra_env: dict[str, str] | None = None, rw_binds: tuple[tuple[str, str], ...] = ()) -> list[str]:
        """``ro_binds``: (host path, sandbox path) mounted read-only, then ``rw_binds`` writable (on
        top of them, in order: a writable directory inside a read-only one); ``tmp_files``: (fd, path in the
        private /tmp) copied in, writable; ``extra_env``: added to the sandbox's environment."""
        args = [
            self.path,
            "--unshare-all", "--unshare-user", "--disable-userns",
            "--die-with-parent", "--new-session",
            "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID),
            "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr",
        ]
        for root in _SYSTEM_ROOTS:
            if os.path.islink(root):
                args += ["--symlink", os.readlink(root), root]
            elif os.path.isdir(root):
                args += ["--ro-bind", root, root]
        for name in _ETC_FILES:
            args += ["--ro-bind-try", name, name]
        args += [
            "--proc", "/proc",
            "--dev", "/dev",
            # POSIX shared memory (multiprocessing's locks) needs a writable /dev/shm: a small one
            "--size", str(min(tmp_mib, SHM_MIB) * 1024 * 1024), "--tmpfs", "/dev/shm",  # noqa: S108
            "--size", str(tmp_mib * 1024 * 1024), "--tmpfs", WORKDIR,
            "--ro-bind-data", str(script_fd), f"{SCRIPT_DIR}/{script_name}",
        ]
        for source, target in ro_binds:
            args += ["--ro-bind", source, target]
        for source, target in rw_binds:
            args += ["--bind", source, target]
        for fd, target in tmp_files:
            args += ["--dir", os.path.dirname(target), "--file", str(fd), target]
        args += [
            # bwrap's root and /dev are tmpfs without a size: nothing may be written there
            "--remount-ro", "/dev",
            "--remount-ro", "/",
            "--chdir", WORKDIR,
            "--clearenv",
        ]
        for key, value in {**sandbox_env(WORKDIR), **(extra_env or {})}.items():
            args += ["--setenv", key, value]
        if seccomp_fd is not None:
            args += ["--seccomp", str(seccomp_fd)]
        return [*args, "--", *limits.prlimit_argv(self.prlimit), *command, f"{SCRIPT_DIR}/{script_name}"]


def find_bubblewrap(configured: str | None) -> tuple[Bubblewrap | None, str]:
    """bubblewrap if it is here and works (user namespaces allowed); else None and why not."""
    path = configured or shutil.which("bwrap")
    if path is None or not os.access(path, os.X_OK):
        return None, f"bubblewrap not found ({configured or 'bwrap on PATH'})"
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        return None, "prlimit (util-linux) not found"
    program, seccomp_note = seccomp.compile_filter()
    plain = Bubblewrap(path=path, prlimit=prlimit)
    failure = _probe(plain)
    if failure:
        return None, failure
    if program is None:
        return plain, f"bubblewrap at {path}, without a seccomp filter: {seccomp_note}"
    filtered = Bubblewrap(path=path, prlimit=prlimit, seccomp=program)
    failure = _probe(filtered)
    if failure:
        return plain, f"bubblewrap at {path}, without a seccomp filter: {failure}"
    return filtered, f"bubblewrap at {path} with a seccomp filter ({seccomp_note})"


def _probe(bwrap: Bubblewrap) -> str | None:
    """Why bubblewrap cannot run a sandbox here, or None when it can."""
    read_fd, write_fd = os.pipe()
    os.close(write_fd)
    fds = [read_fd]
    if bwrap.seccomp is not None:
        fds.append(seccomp.filter_fd(bwrap.seccomp))
    try:
        probe = bwrap.argv(script_fd=read_fd, script_name="probe", tmp_mib=1,
                           limits=Limits(cpu_seconds=5, memory_mib=256, file_mib=1, processes=8),
                           command=("/usr/bin/true",), seccomp_fd=fds[1] if len(fds) > 1 else None)
        probe, switch = as_sandbox_user(probe)
        done = subprocess.run(probe, pass_fds=fds, capture_output=True, text=True, env={},
                              cwd="/", timeout=10, check=False, **switch)  # type: ignore[call-overload]
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bubblewrap at {bwrap.path} could not start: {exc}"
    finally:
        for fd in fds:
            os.close(fd)
    if done.returncode != 0:
        return f"bubblewrap at {bwrap.path} fails here (exit {done.returncode}): {done.stderr.strip()}"
    return None
