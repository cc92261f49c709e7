"""A matplotlib backend for the local sandbox: figures come back to the chat as PNG results.

Installed into the sandbox's Python environment and selected with
``MPLBACKEND=module://athenic_sandbox_backend``. It renders with Agg (headless), and like
E2B's kernel it hands back every figure that ``plt.show()`` shows (then closes it) and every
figure still open when the program ends.

Each PNG goes, framed, to the pipe whose descriptor is in ``ATHENIC_FIGURES_FD`` (figures.py
in the orchestrator reads it): a 4-byte big-endian length, then the bytes. A length of 0 says
"a figure was left out" (over the count or size limit), so the answer can say so. The
orchestrator trusts none of this: it re-checks every limit and the PNG signature itself; the
limits here only save the work of rendering what would be dropped.

This file runs inside the sandbox's interpreter (CPython 3.11), never in the services.
"""

from __future__ import annotations

import atexit
import io
import os
import struct
import sys
from typing import Any

from matplotlib._pylab_helpers import Gcf
from matplotlib.backend_bases import FigureManagerBase
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

FigureCanvas = FigureCanvasAgg
FigureManager = FigureManagerBase


def _int_env(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


_FD = _int_env("ATHENIC_FIGURES_FD", -1)
_MAX_FIGURES = _int_env("ATHENIC_FIGURES_MAX", 4)
_MAX_BYTES = _int_env("ATHENIC_FIGURES_MAX_BYTES", 256 * 1024)
_sent = 0
_bytes = 0


def _write(data: bytes) -> None:
    global _FD
    if _FD < 0:
        return
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(_FD, view):]
    except OSError:
        # the pipe is gone (closed by the code itself, or the run is over): nothing more to send
        _FD = -1


def _emit(figure: Figure) -> None:
    global _sent, _bytes
    if _sent >= _MAX_FIGURES:
        _write(struct.pack(">I", 0))
        return
    buffer = io.BytesIO()
    # as Jupyter's inline backend draws them (E2B's kernel): cropped to what was drawn
    figure.savefig(buffer, format="png", bbox_inches="tight")
    png = buffer.getvalue()
    if _bytes + len(png) > _MAX_BYTES:
        _write(struct.pack(">I", 0))
        return
    _sent += 1
    _bytes += len(png)
    _write(struct.pack(">I", len(png)) + png)


def _emit_open_figures() -> None:
    for manager in Gcf.get_all_fig_managers():
        try:
            _emit(manager.canvas.figure)
        except Exception as exc:  # a figure that cannot be drawn must not hide the others
            print(f"athenic: a figure could not be rendered: {exc!r}", file=sys.stderr)


def show(*_args: Any, **_kwargs: Any) -> None:
    """``plt.show()``: hand back every open figure, then close them (as the inline backend does)."""
    _emit_open_figures()
    Gcf.destroy_all()


# Registered when matplotlib loads this backend, after pyplot registered its own clean-up:
# atexit runs the newest first, so the figures are still open here.
atexit.register(_emit_open_figures)
