"""A seccomp filter for the local sandbox: system calls that code never needs fail with EPERM.

They are the kernel's usual attack surface (keyrings, eBPF, perf, io_uring, userfaultfd),
ways to look into other processes (ptrace, process_vm_*), and administration (mounts,
modules, clocks, swap, reboot). The filter is compiled once with libseccomp (through ctypes;
Debian's apt depends on it, so it is on every Debian image) and handed to bubblewrap
(``--seccomp FD``) for each run. Without libseccomp the sandbox runs without the filter.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_ACT_ERRNO = 0x00050000

DENIED: tuple[str, ...] = (
    # kernel attack surface
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    # namespaces and mounts (also refused for lack of capabilities; refused here first)
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    # administration
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
    "swapon", "swapoff", "acct", "quotactl", "syslog", "vhangup", "iopl", "ioperm",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "fanotify_init", "uselib",
)


def compile_filter() -> tuple[bytes | None, str]:
    """The BPF program of the filter for this machine's architecture; None (and why) without libseccomp."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    except OSError as exc:
        return None, f"libseccomp not found ({exc})"
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.restype = ctypes.c_int
    lib.seccomp_export_bpf.restype = ctypes.c_int
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        return None, "seccomp_init failed"
    fd = os.memfd_create("athenic-seccomp", os.MFD_CLOEXEC)
    try:
        for name in DENIED:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:  # not a system call of this architecture
                continue
            status = lib.seccomp_rule_add(ctypes.c_void_p(ctx), ctypes.c_uint32(_SCMP_ACT_ERRNO | errno.EPERM),
                                          ctypes.c_int(number), ctypes.c_uint(0))
            if status < 0:
                return None, f"seccomp_rule_add({name}) failed: {os.strerror(-status)}"
        status = lib.seccomp_export_bpf(ctx, fd)
        if status < 0:
            return None, f"seccomp_export_bpf failed: {os.strerror(-status)}"
        size = os.lseek(fd, 0, os.SEEK_END)
        return os.pread(fd, size, 0), f"{len(DENIED)} system calls denied"
    finally:
        os.close(fd)
        lib.seccomp_release(ctx)


def filter_fd(program: bytes) -> int:
    """A fresh descriptor holding the program, at offset 0, for one bubblewrap launch to read."""
    fd = os.memfd_create("athenic-seccomp", os.MFD_CLOEXEC)
    os.write(fd, program)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
