"""Message contracts: what the api publishes, what the orchestrator stores, what clients see.

Field names on the wire are the app's (camelCase, ``requiresE2B``); they never change name,
type or meaning. New fields may be added.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

Status = Literal["pending", "processing", "completed", "failed", "cancelled"]
FINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

# What happens to a message that arrives while its conversation is still answering another.
OnBusy = Literal["enqueue", "interrupt", "reject"]
ON_BUSY_VALUES: tuple[str, ...] = ("enqueue", "interrupt", "reject")

# Progress of one message as pushed to clients (issue: code execution, real-time delivery).
Phase = Literal["queued", "planning", "running", "completed", "failed", "cancelled"]


_second: list[Any] = [None, ""]  # the current second and its formatted prefix (strftime is slow)


def iso_timestamp(moment: datetime | None = None) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``, as the app expects: 2025-04-27T20:53:57.947Z."""
    if moment is None:
        now = time.time()
        second = int(now)
        if second != _second[0]:
            _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))]
        return f"{_second[1]}{int((now - second) * 1000):03d}Z"
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class ChatRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One accepted chat message, as published to the request stream."""

    request_id: str
    client_id: str
    message: str
    submitted_at: str
    tenant: str = "default"
    owner: str | None = None
    on_busy: OnBusy = "enqueue"


class ExecutionError(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    value: str
    traceback: str = ""


class FileRef(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A conversation file a run made (no bytes: ``url`` serves them, with the caller's token)."""

    name: str
    size: int
    content_type: str
    url: str


class Execution(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One run of code in a sandbox, as it appears in the response record."""

    language: str
    code: str
    stdout: str = ""
    stderr: str = ""
    # Rich results: one dict per result, keyed by format: text, json, html... An image or other
    # file (png, jpeg, svg, pdf) is stored as a conversation file: its result lists it under
    # "files" ([FileRef...]) instead of holding its bytes.
    results: list[dict[str, Any]] = msgspec.field(default_factory=list)
    # rich results the sandbox left out (over its image count or size limit, or not a PNG)
    results_dropped: int = 0
    error: ExecutionError | None = None
    exit_code: int | None = None
    duration_ms: int = 0
    timed_out: bool = False
    truncated: bool = False
    cancelled: bool = False
    backend: str = "local"
    # when the run was admitted and started (ISO-8601 UTC, ms): with durationMs, when it ran
    started_at: str | None = None
    # what the record's byte budget cut from this execution, in words (None: nothing)
    dropped: str | None = None
    # files the run made (files/out/ and image results), kept as conversation files
    files: list[FileRef] = msgspec.field(default_factory=list)
    # what the run made but was not kept, each "name: why" (over a limit, a bad name...)
    files_not_kept: list[str] = msgspec.field(default_factory=list)
    # what the sandbox says about the conversation's state, in words: a kernel that was replaced
    # (variables of earlier runs are gone) and why; None: nothing to say
    notice: str | None = None


class ChatResponse(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``lastResponse``: the answer to one message."""

    message: str
    requires_e2b: bool = msgspec.field(name="requiresE2B")
    client_id: str
    timestamp: str
    request_id: str
    status: Status
    executions: list[Execution] = msgspec.field(default_factory=list)
    error: str | None = None
    # the answer was cut to fit the record's byte budget; ``dropped`` says what went
    truncated: bool = False
    dropped: str | None = None


class ResponseRecord(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The KV value per clientId: the latest message and the answer to the newest one answered.

    ``seq`` is the request stream's sequence of the message this record is about; a writer
    never replaces a record about a newer message (compare-and-set on the KV revision).
    """

    last_message: str
    last_response: ChatResponse | None
    requires_e2b: bool = msgspec.field(name="requiresE2B")
    status: Status
    request_id: str
    seq: int
    updated_at: str
    owner: str | None = None
    tenant: str = "default"


class Turn(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One accepted message and its answer: an item of the conversation log (and of the history route)."""

    request_id: str
    message: str
    submitted_at: str
    status: Status
    response: ChatResponse | None = None


class Conversation(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Per clientId: who owns it and how far its log goes (``TURNS_BUCKET`` holds turns 1..turns).

    ``last_request_id`` is the request of turn ``turns``, so a redelivered message already in the
    log is never counted twice; a message whose stream sequence is below ``cancel_before`` was
    interrupted by a later one and is answered ``cancelled`` without running.
    """

    owner: str | None = None
    tenant: str = "default"
    turns: int = 0
    last_request_id: str | None = None
    cancel_before: int = 0
    created_at: str = ""


class ChatState(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What ``GET /api/chat/response/{clientId}`` answers and what a push of the record carries."""

    last_message: str
    last_response: ChatResponse | None
    requires_e2b: bool = msgspec.field(name="requiresE2B")
    timestamp: str
    status: Status
    request_id: str
    client_id: str
    revision: int | None = None

    @classmethod
    def of_record(cls, record: ResponseRecord, client_id: str, revision: int | None) -> ChatState:
        return cls(
            last_message=record.last_message,
            last_response=record.last_response,
            requires_e2b=record.requires_e2b,
            timestamp=iso_timestamp(),
            status=record.status,
            request_id=record.request_id,
            client_id=client_id,
            revision=revision,
        )


class ProgressEvent(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    """Pushed while a message is worked on: a status change, a chunk of output, or answer text.

    A ``delta`` carries the next ``text`` of the answer; the deltas of one attempt at a message
    concatenate to the final ``message``. ``index`` counts them from 0 per attempt, so a client
    sees a restart (a retried message starts at 0 again) or a stream it joined half-way.
    Fields a type does not use are left out of its JSON.
    """

    type: Literal["status", "stdout", "stderr", "delta"]
    client_id: str
    request_id: str
    timestamp: str
    phase: Phase | None = None
    data: str | None = None
    text: str | None = None
    index: int | None = None


class KernelHome(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``KERNELS_BUCKET``: the orchestrator (its host id) that holds a conversation's kernel."""

    host: str


class KernelRun(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A run forwarded to the kernel's host on ``kernel_run_subject``; its output streams to ``output``."""

    run_id: str
    client_id: str
    tenant: str
    language: str
    code: str
    timeout_seconds: float
    memory_mib: int
    idle_seconds: int
    output: str


class KernelOutput(msgspec.Struct, frozen=True, kw_only=True):
    """A chunk of a forwarded run's output; ``end`` is the last frame, sent before the reply."""

    stream: Literal["stdout", "stderr", "end"]
    text: str = ""


class KernelReply(msgspec.Struct, frozen=True, kw_only=True):
    """The host's answer to a ``KernelRun``: the execution, or why the host could not run it."""

    execution: Execution | None = None
    error: str | None = None


response_record_decoder = msgspec.json.Decoder(ResponseRecord)
turn_decoder = msgspec.json.Decoder(Turn)
conversation_decoder = msgspec.json.Decoder(Conversation)
chat_request_decoder = msgspec.json.Decoder(ChatRequest)
progress_event_decoder = msgspec.json.Decoder(ProgressEvent)
encode = msgspec.json.encode


# Notifications (issue 15).
FinalStatus = Literal["completed", "failed", "cancelled"]
Platform = Literal["fcm", "apns"]


class TurnFinished(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Published by the orchestrator once a turn's final record is written (``NOTIFY_STREAM``)."""

    request_id: str
    client_id: str
    tenant: str
    owner: str | None
    status: FinalStatus
    timestamp: str
    # the start of the answer's text; shown on a device only when previews are turned on
    preview: str = ""
    error: str | None = None


class Device(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A registered device (``DEVICES_BUCKET``)."""

    platform: Platform
    token: str
    owner: str | None
    registered_at: str


class Delivery(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One notification to send: a push to one device, or one webhook call (``NOTIFY_STREAM``)."""

    kind: Literal["fcm", "apns", "webhook"]
    event: TurnFinished
    device_key: str | None = None  # the device's key in DEVICES_BUCKET (pushes)
    device_token: str | None = None
    webhook_url: str | None = None  # where a webhook goes (its secret is looked up by tenant, never stored here)


turn_finished_decoder = msgspec.json.Decoder(TurnFinished)
device_decoder = msgspec.json.Decoder(Device)
delivery_decoder = msgspec.json.Decoder(Delivery)
