"""Output capture and error reading, on their own."""

from __future__ import annotations

import pytest

from athenic.orchestrator.sandbox.factory import make_sandbox
from athenic.orchestrator.sandbox.output import LIMIT_NOTICE, CappedOutput
from athenic.orchestrator.sandbox.tracebacks import python_error, strip_ansi
from athenic.orchestrator.settings import OrchestratorSettings
from athenic.shared.settings import SettingsError, load

pytestmark = pytest.mark.unit


def test_output_under_the_limit_is_kept_whole() -> None:
    capture = CappedOutput(100)
    assert capture.feed(b"hello ") == "hello "
    assert capture.feed(b"world") == "world"
    assert capture.text() == "hello world"
    assert not capture.truncated


def test_output_over_the_limit_keeps_head_and_tail_and_says_how_much_is_missing() -> None:
    capture = CappedOutput(400)
    live = capture.feed(b"a" * 1000) + capture.feed(b"b" * 1000) + capture.feed(b"END")
    assert live == "a" * 300 + LIMIT_NOTICE
    text = capture.text()
    assert text.startswith("a" * 300)
    assert text.endswith("b" * 97 + "END")
    assert "[... 1603 bytes of output omitted (output limit reached) ...]" in text
    assert capture.truncated


def test_a_cut_inside_a_character_does_not_garble_the_text() -> None:
    capture = CappedOutput(40)
    capture.feed("€".encode() * 100)
    assert "\ufffd" not in capture.text().split("]")[-1]


def test_python_errors_are_read_from_stderr() -> None:
    stderr = (
        "some output\nTraceback (most recent call last):\n  File \"/sandbox/main.py\", line 2, in <module>\n"
        "    raise ValueError('first\\nsecond')\nValueError: first\nsecond\n"
    )
    error = python_error(stderr)
    assert error is not None
    assert (error.name, error.value) == ("ValueError", "first\nsecond")
    assert error.traceback.startswith("Traceback")
    assert python_error("just a warning on stderr\n") is None


def test_ansi_colours_are_stripped() -> None:
    assert strip_ansi("\x1b[0;31mKeyError\x1b[0m: 'k'") == "KeyError: 'k'"


def test_the_backend_is_chosen_by_the_environment_alone() -> None:
    assert make_sandbox(load(OrchestratorSettings, {"ATHENIC_BWRAP_PATH": "/nonexistent"})).name == "local"
    keyed = load(OrchestratorSettings, {"E2B_API_KEY": "e2b_x"})
    assert keyed.sandbox_backend == "e2b"
    with pytest.raises(SettingsError, match="NATS"):  # its sandboxes live in the sandboxes bucket
        make_sandbox(keyed)
    forced_local = load(OrchestratorSettings, {"E2B_API_KEY": "e2b_x", "ATHENIC_SANDBOX": "local"})
    assert make_sandbox(forced_local).name == "local"
    with pytest.raises(SettingsError, match="E2B_API_KEY"):
        make_sandbox(load(OrchestratorSettings, {"ATHENIC_SANDBOX": "e2b"}))
