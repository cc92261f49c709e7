"""Read the error out of what a failed process printed, and explain how a run ended.

A Python program that dies of an exception prints a traceback on stderr whose last line is
``Name: value``; a syntax error prints the offending line and a caret instead of the
``Traceback`` header. Other endings (a signal, a limit, a plain non-zero exit) get a sentence
the user can act on.
"""

from __future__ import annotations

import re
import signal

from athenic.shared.messages import ExecutionError

_HEADER = "Traceback (most recent call last):"
_EXCEPTION_LINE = re.compile(r"^(?P<name>[A-Za-z_][\w.]*)(?::\s?(?P<value>.*))?$")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    """Jupyter colours its tracebacks; the record holds plain text."""
    return _ANSI.sub("", text)


def python_error(stderr: str) -> ExecutionError | None:
    """The exception a Python program died of, from its stderr; None when there is none."""
    lines = stderr.rstrip("\n").splitlines()
    start = _block_start(lines)
    if start is None:
        return None
    # Frames are indented; the first line at column 0 after them is `Name: value` (the value
    # may run over several lines).
    for index in range(start + 1, len(lines)):
        if lines[index] and not lines[index].startswith(" "):
            match = _EXCEPTION_LINE.match(lines[index])
            if match is None:
                return None
            name = match["name"].rsplit(".", 1)[-1]
            value = "\n".join([match["value"] or "", *lines[index + 1:]]).strip()
            return ExecutionError(name=name, value=value, traceback="\n".join(lines[start:]))
    return None


def _block_start(lines: list[str]) -> int | None:
    for index in range(len(lines) - 1, -1, -1):
        if lines[index] == _HEADER:
            return index
    # A SyntaxError raised while compiling the script: `  File "...", line N` then the caret.
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith('  File "'):
            return index
    return None


def signal_error(signum: int, *, cpu_seconds: int, memory_mib: int) -> ExecutionError:
    """Why a process killed by a signal stopped, in words."""
    if signum == signal.SIGXCPU:
        return ExecutionError(name="CPUTimeLimitExceeded",
                              value=f"the code used more than {cpu_seconds} s of CPU time and was stopped")
    if signum == signal.SIGXFSZ:
        return ExecutionError(name="FileSizeLimitExceeded", value="the code wrote a file larger than allowed")
    if signum == signal.SIGKILL:
        return ExecutionError(name="Killed",
                              value=f"the process was killed (likely over its {memory_mib} MiB memory limit)")
    try:
        label = signal.Signals(signum).name
    except ValueError:
        label = f"signal {signum}"
    return ExecutionError(name="Crashed", value=f"the process was stopped by {label}")


def timeout_error(seconds: float) -> ExecutionError:
    return ExecutionError(name="TimeoutError",
                          value=f"the code ran longer than the {seconds:g} s time limit and was stopped")


def exit_error(status: int) -> ExecutionError:
    return ExecutionError(name="NonZeroExit", value=f"the program exited with status {status}")
