"""The shared contracts: names that cannot escape a subject, the app's timestamp format, wire names."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from athenic.shared import names
from athenic.shared.messages import ChatResponse, ProgressEvent, ResponseRecord, encode, iso_timestamp

pytestmark = pytest.mark.unit


def test_timestamps_have_milliseconds_and_z() -> None:
    moment = datetime(2025, 4, 27, 20, 53, 57, 947_512, tzinfo=UTC)
    assert iso_timestamp(moment) == "2025-04-27T20:53:57.947Z"


@pytest.mark.parametrize("bad", ["", "a.b", "a*", ">", "a b", "a/b", "ü", "x" * 129])
def test_client_ids_that_could_reach_another_subject_are_refused(bad: str) -> None:
    assert not names.valid_client_id(bad)
    with pytest.raises(ValueError, match="invalid clientId"):
        names.request_subject(bad)


def test_uuid_and_longest_client_ids_pass() -> None:
    assert names.request_subject("2cd39703-d6ff-4d1c-b9ae-b83340986ca3").endswith("b83340986ca3")
    assert names.valid_client_id("A" * 128)


def test_wire_names_are_the_apps() -> None:
    response = ChatResponse(message="m", requires_e2b=True, client_id="c", timestamp="t", request_id="r",
                            status="completed")
    record = ResponseRecord(last_message="m", last_response=response, requires_e2b=True, status="completed",
                            request_id="r", seq=1, updated_at="t")
    wire = msgspec.json.decode(encode(record))
    assert {"lastMessage", "lastResponse", "requiresE2B"} <= set(wire)
    assert {"message", "requiresE2B", "clientId", "timestamp"} <= set(wire["lastResponse"])


def test_progress_frames_carry_only_their_own_fields() -> None:
    delta = ProgressEvent(type="delta", client_id="c", request_id="r", timestamp="t", text="Hel", index=0)
    assert msgspec.json.decode(encode(delta)) == {"type": "delta", "clientId": "c", "requestId": "r",
                                                   "timestamp": "t", "text": "Hel", "index": 0}
    status = ProgressEvent(type="status", client_id="c", request_id="r", timestamp="t", phase="running")
    assert encode(status).startswith(b'{"type":"status",')  # the api relies on "type" coming first
    assert msgspec.json.decode(encode(status)) == {"type": "status", "clientId": "c", "requestId": "r",
                                                    "timestamp": "t", "phase": "running"}


def test_settings_repr_never_shows_secrets() -> None:
    from athenic.orchestrator.settings import OrchestratorSettings
    from athenic.shared.settings import NatsSettings, load

    settings = load(OrchestratorSettings, {"E2B_API_KEY": "e2b_sekrit", "OPENAI_API_KEY": "sk-sekrit"})
    assert "sekrit" not in repr(settings)
    assert "ATHENIC_CONCURRENCY=8" in repr(settings)
    assert "hunter2" not in repr(load(NatsSettings, {"NATS_PASSWORD": "hunter2"}))
