"""The local sandbox's own Python environment: the libraries people ask for, read-only, as the
sandbox's unprivileged uid; matplotlib figures come back as PNG results, within bounds."""

from __future__ import annotations

import base64
import os
import struct
import subprocess
import tracemalloc
from pathlib import Path

import pytest
import structlog

from athenic.orchestrator.sandbox.base import RunSpec
from athenic.orchestrator.sandbox.figures import PNG_SIGNATURE
from athenic.orchestrator.sandbox.local import LocalSandbox
from athenic.orchestrator.sandbox.python_env import SANDBOX_PATH
from tests.orchestrator.sandbox.backends import OUTPUT_LIMIT, PYTHON_ENV
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.integration

REPO_ROOT = REPO_ROOT
# numpy + scipy + pandas + matplotlib map ~340 MiB of address space on import (the limit is
# RLIMIT_AS): the policy's default of 512 MiB, not the 256 MiB the abuse tests use
MEMORY_MIB = 512


def spec(code: str, *, timeout: float = 30) -> RunSpec:
    return RunSpec(client_id="c1", language="python", code=code, timeout_seconds=timeout, memory_mib=MEMORY_MIB)


def with_env(backend: LocalSandbox) -> LocalSandbox:
    if backend.python_env is None:
        pytest.fail(f"no sandbox Python environment at {PYTHON_ENV}: `make sandbox-python` (which "
                    "`make test` runs) installs it")
    return backend


@pytest.fixture(params=["bubblewrap", "rlimits-only"])
def any_local(request: pytest.FixtureRequest) -> LocalSandbox:
    """Both variants of the backend run the environment."""
    name = "local_sandbox" if request.param == "bubblewrap" else "bare_sandbox"
    backend: LocalSandbox = request.getfixturevalue(name)
    if request.param == "bubblewrap" and not backend.isolated:
        pytest.skip("bubblewrap does not work here; the rlimits-only variant runs the environment")
    return with_env(backend)


def png_of(result: dict[str, str]) -> bytes:
    png = base64.b64decode(result["png"], validate=True)
    assert png.startswith(PNG_SIGNATURE)
    assert png[12:16] == b"IHDR"
    return png


def png_size(png: bytes) -> tuple[int, int]:
    width, height = struct.unpack(">II", png[16:24])
    return width, height


async def test_the_libraries_import_as_the_sandbox_user(any_local: LocalSandbox) -> None:
    code = (
        "import os, sys\n"
        "import numpy, pandas, scipy, sympy, matplotlib, PIL, seaborn, sklearn, openpyxl\n"
        "print(os.getuid(), sys.prefix)\n"
        "print(matplotlib.get_backend())\n"
    )
    execution = await any_local.run(spec(code))
    assert execution.error is None, execution.stderr
    uid, prefix = execution.stdout.splitlines()[0].split()
    if os.geteuid() == 0 or any_local.isolated:
        assert uid == "65534"
    assert prefix == (SANDBOX_PATH if any_local.isolated else PYTHON_ENV)
    assert execution.stdout.splitlines()[1] == "module://athenic_sandbox_backend"


async def test_numerical_code_gives_the_right_answers(any_local: LocalSandbox) -> None:
    code = (
        "import numpy as np, pandas as pd, sympy\n"
        "from scipy import integrate\n"
        "a = np.array([[3.0, 1.0], [1.0, 2.0]])\n"
        "print(np.linalg.solve(a, np.array([9.0, 8.0])).round(6).tolist())\n"
        "print(round(integrate.quad(np.sin, 0, np.pi)[0], 9))\n"
        "x = sympy.symbols('x')\n"
        "print(sympy.integrate(x**2, (x, 0, 3)))\n"
        "print(pd.DataFrame({'v': [1, 2, 3, 4]}).v.mean())\n"
    )
    execution = await any_local.run(spec(code))
    assert execution.error is None, execution.stderr
    assert execution.stdout.splitlines() == ["[2.0, 3.0]", "2.0", "9", "2.5"]


async def test_a_shown_figure_comes_back_as_a_png_result(any_local: LocalSandbox) -> None:
    code = (
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3], [1, 4, 9])\n"
        "plt.title('squares')\n"
        "plt.show()\n"
        "print('after show')\n"
    )
    execution = await any_local.run(spec(code))
    assert execution.error is None, execution.stderr
    assert execution.stdout == "after show\n"
    (result,) = execution.results
    png = png_of(result)
    width, height = png_size(png)
    assert 200 < width < 2000 and 200 < height < 2000
    assert 2_000 < len(png) < 256 * 1024
    assert result["text"] == f"<Figure {width}x{height} px>"
    assert execution.results_dropped == 0


async def test_figures_left_open_come_back_once_and_closed_ones_not(local_sandbox: LocalSandbox) -> None:
    backend = with_env(local_sandbox)
    code = (
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2])\n"
        "plt.show()\n"  # shown, then closed: not again at the end
        "plt.figure(figsize=(2, 2)); plt.plot([2, 1])\n"
        "plt.savefig('/tmp/saved.png')\n"  # saved and still open: returned at the end
        "plt.figure(); plt.plot([0, 0]); plt.close()\n"  # closed: never returned
    )
    execution = await backend.run(spec(code))
    assert execution.error is None, execution.stderr
    assert len(execution.results) == 2
    small = png_size(png_of(execution.results[1]))
    assert small[0] < 250 and small[1] < 250  # the 2x2-inch figure, at 100 dpi, cropped


async def test_figures_over_the_limits_are_dropped_and_counted() -> None:
    backend = with_env(LocalSandbox(output_limit_bytes=OUTPUT_LIMIT, python_env=PYTHON_ENV, max_images=2))
    try:
        code = "import matplotlib.pyplot as plt\nfor i in range(5):\n    plt.figure(); plt.plot([0, i])\nplt.show()"
        execution = await backend.run(spec(code))
        assert execution.error is None, execution.stderr
        assert len(execution.results) == 2
        assert execution.results_dropped == 3
    finally:
        await backend.aclose()
    tiny = with_env(LocalSandbox(output_limit_bytes=OUTPUT_LIMIT, python_env=PYTHON_ENV, image_bytes=1024))
    try:
        execution = await tiny.run(spec("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()"))
        assert execution.results == []
        assert execution.results_dropped == 1
    finally:
        await tiny.aclose()


async def test_forged_figure_frames_cannot_break_the_run(any_local: LocalSandbox) -> None:
    """The code can write to the figure pipe itself: lies about lengths, non-PNG bytes and a
    flood are all thrown away, with the orchestrator's memory bounded."""
    code = (
        "import os, struct\n"
        "fd = int(os.environ['ATHENIC_FIGURES_FD'])\n"
        "os.write(fd, struct.pack('>I', 12) + b'not a png!!!')\n"
        "os.write(fd, struct.pack('>I', 0))\n"
        "chunk = b'\\xff' * (1 << 20)\n"
        "os.write(fd, struct.pack('>I', 0xFFFFFFFF))\n"
        "for _ in range(40):\n"
        "    os.write(fd, chunk)\n"
        "print('flooded')\n"
    )
    tracemalloc.start()
    try:
        execution = await any_local.run(spec(code))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert execution.error is None, execution.stderr
    assert execution.stdout == "flooded\n"
    assert execution.results == []
    assert execution.results_dropped == 3  # the fake, the empty frame, the 4 GiB one cut short
    assert peak < 8 * 1024 * 1024, f"the orchestrator held {peak} bytes while 40 MB went by"
    assert (await any_local.run(spec("print(1)"))).stdout == "1\n"


async def test_the_environment_is_read_only_inside_the_sandbox(any_local: LocalSandbox) -> None:
    if not any_local.isolated and os.geteuid() != 0:
        pytest.skip("without bubblewrap and not root, the code runs as the uid that owns the environment")
    code = (
        "import errno, os, sys, numpy\n"
        "site = os.path.dirname(os.path.dirname(numpy.__file__))\n"
        "for path in (numpy.__file__, os.path.join(site, 'injected.py'), os.path.join(sys.prefix, 'x')):\n"
        "    try:\n"
        "        open(path, 'a').close()\n"
        "        print('wrote', path)\n"
        "    except OSError as exc:\n"
        "        print(errno.errorcode[exc.errno])\n"
    )
    execution = await any_local.run(spec(code))
    assert execution.error is None, execution.stderr
    assert "wrote" not in execution.stdout
    refusals = execution.stdout.splitlines()
    assert len(refusals) == 3 and set(refusals) <= {"EROFS", "EACCES"}, refusals
    if any_local.isolated:
        # a root-owned file may be refused by permissions first; a new file meets the read-only mount
        assert refusals[1:] == ["EROFS", "EROFS"]
    assert not Path(PYTHON_ENV, "injected.py").exists()


async def test_without_the_environment_python_runs_bare_and_it_is_said_once() -> None:
    with structlog.testing.capture_logs() as logs:
        backend = LocalSandbox(output_limit_bytes=OUTPUT_LIMIT, python_env="/nonexistent/sandbox-python")
    try:
        warnings = [entry for entry in logs if "PYTHON LIBRARIES" in entry["event"]]
        assert len(warnings) == 1
        assert warnings[0]["log_level"] == "warning"
        assert "/nonexistent/sandbox-python" in warnings[0]["reason"]
        assert backend.python_env is None
        execution = await backend.run(spec("import sys\nprint(sys.prefix)\nprint(6 * 7)"))
        assert execution.error is None, execution.stderr
        assert execution.stdout == "/usr\n42\n"
        assert execution.results == []
        with structlog.testing.capture_logs() as later:
            await backend.run(spec("print(1)"))
        assert not [entry for entry in later if entry["log_level"] == "warning"]
    finally:
        await backend.aclose()


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, check=False)


def test_make_test_and_make_dev_install_the_environment_first(tmp_path: Path) -> None:
    missing = tmp_path / "never-installed"
    for target in ("test", "dev"):
        plan = _make("-n", target, f"SANDBOX_PYTHON={missing}")
        assert plan.returncode == 0, plan.stderr
        assert f"install.sh {missing}" in plan.stdout, f"`make {target}` does not set the environment up"
    assert not missing.exists()


def test_installing_again_changes_nothing() -> None:
    """Stamped: once installed, make has nothing to do; and the script itself, run again,
    leaves what is installed in place."""
    with_env(LocalSandbox(output_limit_bytes=OUTPUT_LIMIT, python_env=PYTHON_ENV))
    assert _make("-q", "sandbox-python").returncode == 0, "a second `make test` would reinstall"
    numpy_dir = next(Path(PYTHON_ENV).glob("lib/python3*/site-packages/numpy"))
    before = numpy_dir.stat().st_mtime_ns
    again = subprocess.run(["sh", str(REPO_ROOT / "services/athenic/orchestrator/sandbox/sandbox_python/install.sh"),
                            PYTHON_ENV], capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    assert numpy_dir.stat().st_mtime_ns == before
    assert _make("-q", "sandbox-python").returncode == 0
