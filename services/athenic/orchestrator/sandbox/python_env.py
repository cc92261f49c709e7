"""The sandbox's own Python environment: numpy, pandas, matplotlib... for user code.

A virtualenv of Debian's ``/usr/bin/python3`` (the interpreter the sandbox runs), separate
from the services' venv, created by ``sandbox_python/install.sh`` (``make sandbox-python``; the
image carries one at ``/opt/sandbox-python``). bubblewrap binds it read-only at
``SANDBOX_PATH``; without bubblewrap the code runs it where it lies. Where the setting points
at no such environment, the sandbox runs the bare interpreter (standard library only).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

# where the environment appears inside bubblewrap, wherever it lies on the host
SANDBOX_PATH = "/opt/sandbox-python"
# the backend module sandbox_python/athenic_sandbox_backend.py, installed into the environment
MATPLOTLIB_BACKEND = "module://athenic_sandbox_backend"
# inside the private /tmp: matplotlib needs a writable config dir (it keeps its font list there)
MPLCONFIGDIR = "/tmp/.matplotlib"  # noqa: S108
_FONT_CACHE = "share/athenic-matplotlib"


@dataclass(frozen=True)
class PythonEnv:
    root: str
    # matplotlib's font list built at install time (none: matplotlib scans the fonts itself)
    font_cache: str | None

    @property
    def python(self) -> str:
        return os.path.join(self.root, "bin", "python")

    @property
    def sandbox_python(self) -> str:
        return f"{SANDBOX_PATH}/bin/python"


def find_python_env(configured: str) -> tuple[PythonEnv | None, str]:
    """The environment the setting names, or None and why it cannot be used."""
    if not configured:
        return None, "ATHENIC_SANDBOX_PYTHON_ENV is empty"
    root = os.path.abspath(configured)
    if not os.path.isfile(os.path.join(root, "pyvenv.cfg")) or not os.access(
            os.path.join(root, "bin", "python"), os.X_OK):
        return None, f"no Python environment at {root} (`make sandbox-python` creates one)"
    backends = glob.glob(os.path.join(root, "lib", "python3*", "site-packages", "athenic_sandbox_backend.py"))
    if not backends:
        return None, f"{root} lacks athenic_sandbox_backend.py (re-run `make sandbox-python`)"
    caches = sorted(glob.glob(os.path.join(root, _FONT_CACHE, "fontlist-*.json")))
    return PythonEnv(root=root, font_cache=caches[-1] if caches else None), f"sandbox Python environment at {root}"
