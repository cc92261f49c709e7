"""The seccomp filter, tried from inside the sandbox: what it refuses fails with the errno a
program expects, and ordinary Python and bash programs do not notice it."""

from __future__ import annotations

import ctypes
import ctypes.util
import json

import pytest

from athenic.orchestrator.sandbox import seccomp
from athenic.orchestrator.sandbox.base import RunSpec
from athenic.orchestrator.sandbox.local import LocalSandbox

pytestmark = pytest.mark.integration


def spec(code: str, *, language: str = "python", timeout: float = 20) -> RunSpec:
    return RunSpec(client_id="surface", language=language, code=code, timeout_seconds=timeout, memory_mib=512)


def syscall_numbers(names: list[str]) -> dict[str, int]:
    """This architecture's numbers (libseccomp's table of the kernel ABI); names it lacks are left out."""
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2")
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    numbers = {name: lib.seccomp_syscall_resolve_name(name.encode()) for name in names}
    return {name: number for name, number in numbers.items() if number >= 0}


@pytest.fixture
def filtered(isolated_sandbox: LocalSandbox) -> LocalSandbox:
    if isolated_sandbox.bubblewrap is None or isolated_sandbox.bubblewrap.seccomp is None:
        pytest.skip("no seccomp filter here (libseccomp missing or refused): see the backend's start log")
    return isolated_sandbox


# Each call made with every argument 0 (or as given): harmless whether or not it is refused.
_CALLER = """
import ctypes, errno, json, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
out = {}
for name, number, args in json.loads(sys.argv[1] if len(sys.argv) > 1 else CALLS):
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])
    out[name] = "ok" if result >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
print(json.dumps(out))
"""


async def call_all(sandbox: LocalSandbox, calls: list[tuple[str, int, list[int]]]) -> dict[str, str]:
    code = f"CALLS = {json.dumps(json.dumps(calls))}\n{_CALLER}"
    execution = await sandbox.run(spec(code))
    assert execution.error is None, (execution.error, execution.stderr)
    result: dict[str, str] = json.loads(execution.stdout)
    return result


# What Docker's default profile and gVisor refuse that plain bubblewrap (no capabilities) lets through.
MUST_DENY = ["memfd_secret", "userfaultfd", "mbind", "set_mempolicy", "get_mempolicy", "migrate_pages",
             "move_pages", "process_madvise", "kexec_load", "kexec_file_load", "bpf", "perf_event_open",
             "add_key", "keyctl", "request_key", "io_uring_setup", "io_uring_enter", "io_uring_register",
             "ptrace", "process_vm_readv", "kcmp", "pidfd_getfd", "unshare", "setns", "mount", "open_tree",
             "fsopen", "syslog", "quotactl_fd", "open_by_handle_at", "name_to_handle_at", "sysfs", "ustat"]


async def test_every_denied_system_call_fails_with_eperm(filtered: LocalSandbox) -> None:
    assert set(MUST_DENY) <= set(seccomp.DENIED)
    numbers = syscall_numbers(list(seccomp.DENIED))
    assert {"memfd_secret", "mbind", "move_pages", "set_mempolicy", "keyctl"} <= set(numbers)
    answers = await call_all(filtered, [(name, number, [0] * 6) for name, number in numbers.items()])
    assert {name: answer for name, answer in answers.items() if answer != "EPERM"} == {}
    assert len(answers) == len(numbers)


AF_VSOCK, AF_NETLINK, AF_PACKET, AF_ALG, AF_KEY, AF_BLUETOOTH = 40, 16, 17, 38, 15, 31


async def test_socket_families_other_than_unix_and_inet_are_refused(filtered: LocalSandbox) -> None:
    socket_no, socketpair_no = syscall_numbers(["socket"])["socket"], syscall_numbers(["socketpair"])["socketpair"]
    sock_dgram, sock_raw = 2, 3
    calls: list[tuple[str, int, list[int]]] = [
        ("vsock", socket_no, [AF_VSOCK, sock_dgram, 0]),
        ("netlink", socket_no, [AF_NETLINK, sock_raw, 0]),  # NETLINK_ROUTE: any user may open it
        ("packet", socket_no, [AF_PACKET, sock_dgram, 0]),
        ("alg", socket_no, [AF_ALG, 5, 0]),
        ("key", socket_no, [AF_KEY, sock_raw, 2]),
        ("bluetooth", socket_no, [AF_BLUETOOTH, sock_raw, 0]),
        ("unspec", socket_no, [0, sock_dgram, 0]),
        ("past AF_MAX", socket_no, [63, sock_dgram, 0]),
        ("huge", socket_no, [4096, sock_dgram, 0]),
        # the kernel reads a 32-bit family: high bits set must not smuggle netlink in
        ("netlink with high bits", socket_no, [(1 << 32) | AF_NETLINK, sock_raw, 0]),
        ("negative", socket_no, [-1, sock_dgram, 0]),
        ("socketpair netlink", socketpair_no, [AF_NETLINK, sock_raw, 0, 0]),
        # what programs use keeps working
        ("unix", socket_no, [1, 1, 0]),
        ("inet", socket_no, [2, 1, 0]),
        ("inet6", socket_no, [10, 2, 0]),
    ]
    answers = await call_all(filtered, calls)
    refused = {name: answers.pop(name) for name in list(answers) if name not in ("unix", "inet", "inet6")}
    assert refused == dict.fromkeys(refused, "EAFNOSUPPORT")
    assert answers == {"unix": "ok", "inet": "ok", "inet6": "ok"}
    # and as a Python program sees it
    code = (
        "import socket\n"
        "for family in ('AF_NETLINK', 'AF_PACKET', 'AF_VSOCK'):\n"
        "    try:\n"
        "        kind = socket.SOCK_STREAM if family == 'AF_VSOCK' else socket.SOCK_RAW\n"
        "        socket.socket(getattr(socket, family), kind)\n"
        "        print(family, 'opened')\n"
        "    except OSError as exc:\n"
        "        print(family, exc.strerror)\n"
    )
    execution = await filtered.run(spec(code))
    assert execution.stdout.splitlines() == [f"{family} Address family not supported by protocol"
                                             for family in ("AF_NETLINK", "AF_PACKET", "AF_VSOCK")]


async def test_personality_only_reads_or_sets_the_default_persona(filtered: LocalSandbox) -> None:
    number = syscall_numbers(["personality"])["personality"]
    addr_no_randomize, per_linux32, read_implies_exec = 0x0040000, 0x0008, 0x0400000
    answers = await call_all(filtered, [
        ("query", number, [0xFFFFFFFF]),
        ("default", number, [0]),
        ("no aslr", number, [addr_no_randomize]),
        ("linux32", number, [per_linux32]),
        ("read implies exec", number, [read_implies_exec]),
        ("all but one bit", number, [0xFFFFFFFE]),
        ("no aslr with high bits", number, [(1 << 32) | addr_no_randomize]),
        ("query again", number, [0xFFFFFFFF]),
    ])
    assert answers == {"query": "ok", "default": "ok", "no aslr": "EPERM", "linux32": "EPERM",
                       "read implies exec": "EPERM", "all but one bit": "EPERM",
                       "no aslr with high bits": "EPERM", "query again": "ok"}


_ORDINARY_PYTHON = r"""
import asyncio, concurrent.futures, hashlib, json, mmap, multiprocessing, os, select, socket, sqlite3
import ssl, subprocess, tempfile, threading, time, uuid

def square(n):
    return n * n

async def echo_once(host):
    async def handle(reader, writer):
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(handle, host, 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"ping\n")
    line = await reader.readline()
    writer.close()
    server.close()
    return line.decode().strip()

if __name__ == "__main__":
    done = {}
    with multiprocessing.Pool(2) as pool:
        done["pool"] = sum(pool.map(square, range(10)))
    queue = multiprocessing.Queue()
    worker = multiprocessing.Process(target=queue.put, args=("from a child",))
    worker.start(); worker.join()
    done["queue"] = queue.get(timeout=5)
    with concurrent.futures.ThreadPoolExecutor(4) as threads:
        done["threads"] = sum(threads.map(square, range(10)))
    shell = subprocess.run(["/bin/bash", "-c", "echo $((2+3))"], capture_output=True, text=True)
    done["subprocess"] = shell.stdout.strip()
    done["asyncio4"] = asyncio.run(echo_once("127.0.0.1"))
    done["asyncio6"] = asyncio.run(echo_once("::1"))
    a, b = socket.socketpair()
    a.sendall(b"x"); done["socketpair"] = b.recv(1).decode()
    # AI_ADDRCONFIG makes glibc ask netlink which families are configured; refused, it assumes both
    done["getaddrinfo"] = sorted({info[4][0] for host in ("127.0.0.1", "::1") for info in
                                  socket.getaddrinfo(host, 80, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG)})
    done["select"] = bool(select.select([b], [], [], 0) is not None)
    with tempfile.TemporaryFile() as handle:
        handle.write(b"0" * 4096); handle.flush()
        done["mmap"] = len(mmap.mmap(handle.fileno(), 4096))
    done["sqlite"] = sqlite3.connect(":memory:").execute("select 6 * 7").fetchone()[0]
    done["ssl"] = ssl.create_default_context().protocol.name
    done["hash"] = hashlib.sha256(b"x").hexdigest()[:8]
    done["uuid"] = len(str(uuid.uuid4()))
    timer = threading.Timer(0.01, lambda: done.setdefault("timer", True)); timer.start(); timer.join()
    done["memfd"] = os.memfd_create("plain") > 0  # ordinary memfd stays allowed (memfd_secret does not)
    done["cpu"] = os.cpu_count() > 0
    print(json.dumps(done, sort_keys=True))
"""


async def test_ordinary_python_still_works_under_the_filter(filtered: LocalSandbox) -> None:
    execution = await filtered.run(spec(_ORDINARY_PYTHON))
    assert execution.error is None, execution.stderr
    assert json.loads(execution.stdout) == {
        "asyncio4": "ping", "asyncio6": "ping", "cpu": True, "getaddrinfo": ["127.0.0.1", "::1"],
        "hash": "2d711642", "memfd": True, "mmap": 4096, "pool": 285, "queue": "from a child",
        "select": True, "socketpair": "x", "sqlite": 42, "ssl": "PROTOCOL_TLS_CLIENT", "subprocess": "5",
        "threads": 285, "timer": True, "uuid": 36,
    }


_ORDINARY_BASH = r"""
set -euo pipefail
words=$(printf 'b\na\nc\n' | sort | tr '\n' ' ')
echo "sorted: $words"
( sleep 0.05; echo "from a subshell" ) &
wait
echo "sum: $(seq 1 100 | paste -sd+ | bc 2>/dev/null || awk '{s=0; for(i=1;i<=100;i++) s+=i; print s}' <<< x)"
read -r line < <(echo "process substitution")
echo "$line"
mkfifo /tmp/fifo; (echo "through a fifo" > /tmp/fifo) & cat /tmp/fifo; wait
echo "date works: $(date -u +%Y | grep -c .)"
"""


async def test_ordinary_bash_still_works_under_the_filter(filtered: LocalSandbox) -> None:
    if "bash" not in filtered.languages:
        pytest.skip("no /bin/bash on this machine")
    execution = await filtered.run(spec(_ORDINARY_BASH, language="bash"))
    assert execution.exit_code == 0, execution.stderr
    assert execution.stdout.splitlines() == ["sorted: a b c ", "from a subshell", "sum: 5050",
                                             "process substitution", "through a fifo", "date works: 1"]
