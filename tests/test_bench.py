"""The bench scripts still import: they run by hand, so nothing else would notice a moved helper."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize("script", sorted(p.stem for p in BENCH.glob("*.py")))
def test_a_bench_script_imports(script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    module = importlib.import_module(script)
    assert module.__file__ is not None and Path(module.__file__).parent == BENCH
    if not script.startswith("_"):
        assert callable(getattr(module, "main", None)), f"bench/{script}.py has no main()"
    sys.modules.pop(script, None)
