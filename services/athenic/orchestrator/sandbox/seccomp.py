"""A seccomp filter for the local sandbox: what code never needs fails with EPERM (or EAFNOSUPPORT).

A denylist on top of everything else bubblewrap takes away (namespaces, capabilities, the
network): the system calls Docker's default profile refuses to a container without added
capabilities, plus what gVisor does not implement for the same reason. Every mainstream
program runs unchanged in a default Docker container, so it runs here too; an allowlist
would have to be proven against every interpreter and native library users bring (numpy's
BLAS, matplotlib...), and a missing entry would break them in ways a denylist cannot.

- kernel attack surface: keyrings, eBPF, perf, io_uring, userfaultfd, memfd_secret;
- other processes: ptrace, process_vm_*, process_madvise, kcmp, pidfd_getfd;
- memory placement (NUMA): mbind, set_mempolicy, migrate_pages, move_pages (Docker: CAP_SYS_NICE);
- namespaces and mounts, modules, clocks, swap, reboot, obsolete calls;
- by argument: ``socket``/``socketpair`` only for AF_UNIX, AF_INET, AF_INET6 (AF_VSOCK is not
  confined by a network namespace: on VM-based nodes it reaches the host; AF_NETLINK and
  AF_PACKET are the kernel's busiest network surface) failing with EAFNOSUPPORT, as for a
  family the kernel lacks; ``personality`` only to read the persona (0xffffffff) or set the
  default one (0): the others switch off ASLR, make memory executable by default...

The filter is compiled once with libseccomp (through ctypes; Debian's apt depends on it, so
it is on every Debian image) for the machine's own architecture: a system call of another
ABI (i386's ``int 0x80`` on x86_64) kills the thread, so the filter cannot be sidestepped
that way. It is handed to bubblewrap (``--seccomp FD``) for each run. Without libseccomp the
sandbox runs without the filter (the start log says so).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
from dataclasses import dataclass

_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_ACT_ERRNO = 0x00050000
_SCMP_CMP_EQ = 4
_SCMP_CMP_GT = 6
_SCMP_CMP_MASKED_EQ = 7

DENIED: tuple[str, ...] = (
    # kernel attack surface
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "memfd_secret",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp", "pidfd_getfd",
    # memory placement across NUMA nodes (Docker grants it only with CAP_SYS_NICE)
    "mbind", "set_mempolicy", "set_mempolicy_home_node", "get_mempolicy", "migrate_pages", "move_pages",
    # namespaces and mounts (also refused for lack of capabilities; refused here first)
    "unshare", "setns", "mount", "umount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree",
    "open_tree_attr", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "listmount", "statmount",
    # administration
    "init_module", "finit_module", "delete_module", "create_module", "kexec_load", "kexec_file_load",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "syslog", "vhangup", "iopl", "ioperm",
    "settimeofday", "stime", "clock_settime", "clock_adjtime", "adjtimex",
    "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "fanotify_init", "nfsservctl",
    # obsolete or never implemented: nothing calls them, Docker and gVisor refuse them
    "uselib", "_sysctl", "sysfs", "ustat", "vm86", "vm86old", "get_kernel_syms", "query_module",
    "afs_syscall", "tuxcall", "security", "putpmsg", "getpmsg", "vserver",
)

ALLOWED_SOCKET_FAMILIES = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6)
# Families are small integers (AF_MAX is 46 in Linux 6.x); anything above is refused wholesale.
_FAMILY_CEILING = 64
# personality(2): 0 sets the default persona (PER_LINUX), 0xffffffff only reads the current one.
ALLOWED_PERSONAS = (0, 0xFFFFFFFF)


class _Comparison(ctypes.Structure):
    # struct scmp_arg_cmp of <seccomp.h>
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


@dataclass(frozen=True)
class _Rule:
    """Fail ``syscall`` with ``code`` when its first argument matches (libseccomp allows one
    comparison per argument in a rule; several rules of one call are alternatives)."""

    syscall: str
    code: int
    op: int
    datum_a: int
    datum_b: int = 0


def _family_rules(syscall: str) -> list[_Rule]:
    # The kernel reads the family as a 32-bit int; libseccomp compares all 64 bits, so a value
    # with high bits set (which the kernel would truncate to a family) falls under the ceiling rule.
    rules = [_Rule(syscall, errno.EAFNOSUPPORT, _SCMP_CMP_EQ, family)
             for family in range(_FAMILY_CEILING) if family not in ALLOWED_SOCKET_FAMILIES]
    return [*rules, _Rule(syscall, errno.EAFNOSUPPORT, _SCMP_CMP_GT, _FAMILY_CEILING - 1)]


def _persona_rules() -> list[_Rule]:
    # Allowed: all 32 bits equal (0 or 0xffffffff). Refused: any bit differing from bit 0, one
    # masked comparison per bit pair, or anything past 32 bits.
    rules = [_Rule("personality", errno.EPERM, _SCMP_CMP_GT, 0xFFFFFFFF)]
    for bit in range(1, 32):
        mask = 1 | (1 << bit)
        rules.append(_Rule("personality", errno.EPERM, _SCMP_CMP_MASKED_EQ, mask, 1 << bit))
        rules.append(_Rule("personality", errno.EPERM, _SCMP_CMP_MASKED_EQ, mask, 1))
    return rules


ARGUMENT_RULES: tuple[_Rule, ...] = (*_family_rules("socket"), *_family_rules("socketpair"), *_persona_rules())


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
    lib.seccomp_rule_add_array.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_Comparison)]
    lib.seccomp_export_bpf.restype = ctypes.c_int
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        return None, "seccomp_init failed"
    fd = os.memfd_create("athenic-seccomp", os.MFD_CLOEXEC)
    try:
        denied = 0
        for name in DENIED:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:  # not a system call of this architecture (or newer than this libseccomp)
                continue
            status = lib.seccomp_rule_add_array(ctx, _SCMP_ACT_ERRNO | errno.EPERM, number, 0, None)
            if status < 0:
                return None, f"seccomp_rule_add({name}) failed: {os.strerror(-status)}"
            denied += 1
        for rule in ARGUMENT_RULES:
            number = lib.seccomp_syscall_resolve_name(rule.syscall.encode())
            if number < 0:
                return None, f"libseccomp does not know {rule.syscall} on this architecture"
            comparison = _Comparison(0, rule.op, rule.datum_a, rule.datum_b)
            status = lib.seccomp_rule_add_array(ctx, _SCMP_ACT_ERRNO | rule.code, number, 1, ctypes.byref(comparison))
            if status < 0:
                return None, f"seccomp_rule_add({rule.syscall}, arg0) failed: {os.strerror(-status)}"
        status = lib.seccomp_export_bpf(ctx, fd)
        if status < 0:
            return None, f"seccomp_export_bpf failed: {os.strerror(-status)}"
        size = os.lseek(fd, 0, os.SEEK_END)
        return os.pread(fd, size, 0), (f"{denied} system calls denied; socket families other than unix, inet, "
                                       f"inet6 and personas other than the default refused")
    finally:
        os.close(fd)
        lib.seccomp_release(ctx)


def filter_fd(program: bytes) -> int:
    """A fresh descriptor holding the program, at offset 0, for one bubblewrap launch to read."""
    fd = os.memfd_create("athenic-seccomp", os.MFD_CLOEXEC)
    os.write(fd, program)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
