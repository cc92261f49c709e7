"""The languages the local sandbox runs: an interpreter of the system (never the venv's) each.

The code is handed to the interpreter as a read-only file, so tracebacks quote its lines.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from athenic.orchestrator.sandbox.tracebacks import python_error
from athenic.shared.messages import ExecutionError


def _no_error(_stderr: str) -> ExecutionError | None:
    return None


@dataclass(frozen=True)
class Language:
    name: str
    # interpreter and flags; the script's path is appended
    argv: tuple[str, ...]
    script: str
    # the error a failed run died of, read from its stderr
    parse_error: Callable[[str], ExecutionError | None] = _no_error


KNOWN: tuple[Language, ...] = (
    # -I: ignore PYTHON* variables and the user's site; -u: unbuffered, so what was printed
    # before a kill is not lost in a buffer; -B: /usr is read-only anyway.
    Language("python", ("/usr/bin/python3", "-I", "-u", "-B"), "main.py", python_error),
    Language("bash", ("/bin/bash", "--noprofile", "--norc"), "main.sh"),
)


def available() -> dict[str, Language]:
    """The known languages whose interpreter exists on this machine."""
    return {language.name: language for language in KNOWN if os.access(language.argv[0], os.X_OK)}
