"""Every NATS name the services use, defined once.

A clientId is validated against ``CLIENT_ID_PATTERN`` before it is ever placed in a
subject or a KV key, so no caller can reach another subject with ``.``, ``*`` or ``>``.
"""

from __future__ import annotations

import re
from typing import Final

CLIENT_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,128}$"
CLIENT_ID_RE: Final = re.compile(CLIENT_ID_PATTERN)
TENANT_PATTERN: Final = r"^(\*|[A-Za-z0-9_-]{1,128})$"

# The request stream: work-queue retention, one subject per client.
REQUEST_STREAM: Final = "ATHENIC_REQUESTS"
REQUEST_SUBJECT_PREFIX: Final = "athenic.requests"
REQUEST_SUBJECTS: Final = f"{REQUEST_SUBJECT_PREFIX}.*"

# The durable pull consumer every orchestrator replica shares.
ORCHESTRATOR_CONSUMER: Final = "orchestrator"

# Progress events (core NATS, not persisted): status changes and output chunks per client.
EVENT_SUBJECT_PREFIX: Final = "athenic.events"

# Cancel requests (core NATS request/reply), answered by the replica running the work. A
# payload {"before": seq} (an interrupting message) cancels every earlier turn, on every replica.
CANCEL_SUBJECT_PREFIX: Final = "athenic.control.cancel"

# "A turn of this conversation is finished": wakes the conversation's next message where it waits.
ADVANCED_SUBJECT_PREFIX: Final = "athenic.control.advanced"

# Runs of a conversation's local kernel, served by the orchestrator that holds it (its host):
# athenic.kernels.<host>.run (request/reply; output streams to an inbox) and .cancel.
KERNEL_SUBJECT_PREFIX: Final = "athenic.kernels"

# KV buckets.
RESPONSES_BUCKET: Final = "athenic_responses"
POLICIES_BUCKET: Final = "athenic_policies"
LEASES_BUCKET: Final = "athenic_leases"
# The conversation log: one key per conversation (owner, turn count) and one per finished turn.
CONVERSATIONS_BUCKET: Final = "athenic_conversations"
TURNS_BUCKET: Final = "athenic_turns"
# Idempotency-Key -> the request it first named (TTL: the idempotency window).
IDEMPOTENCY_BUCKET: Final = "athenic_idempotency"

# Which orchestrator holds a conversation's local kernel: <tenant>.<clientId> -> KernelHome.
KERNELS_BUCKET: Final = "athenic_kernels"

# Message headers that travel with a request.
HDR_MSG_ID: Final = "Nats-Msg-Id"
HDR_REQUEST_ID: Final = "Athenic-Request-Id"
HDR_TENANT: Final = "Athenic-Tenant"
HDR_OWNER: Final = "Athenic-Owner"
HDR_TRACEPARENT: Final = "traceparent"
HDR_ON_BUSY: Final = "Athenic-On-Busy"
# JetStream stores the message only if no message of its subject is in the stream (an idle conversation).
HDR_EXPECTED_LAST_SUBJECT_SEQ: Final = "Nats-Expected-Last-Subject-Sequence"


def valid_client_id(client_id: str) -> bool:
    return CLIENT_ID_RE.fullmatch(client_id) is not None


def _checked(client_id: str) -> str:
    if not valid_client_id(client_id):
        raise ValueError(f"invalid clientId {client_id!r}")
    return client_id


def request_subject(client_id: str) -> str:
    return f"{REQUEST_SUBJECT_PREFIX}.{_checked(client_id)}"


def event_subject(client_id: str) -> str:
    return f"{EVENT_SUBJECT_PREFIX}.{_checked(client_id)}"


def cancel_subject(client_id: str) -> str:
    return f"{CANCEL_SUBJECT_PREFIX}.{_checked(client_id)}"


def advanced_subject(client_id: str) -> str:
    return f"{ADVANCED_SUBJECT_PREFIX}.{_checked(client_id)}"


def kernel_run_subject(host: str) -> str:
    return f"{KERNEL_SUBJECT_PREFIX}.{_checked(host)}.run"


def kernel_cancel_subject(host: str) -> str:
    return f"{KERNEL_SUBJECT_PREFIX}.{_checked(host)}.cancel"


def kernel_key(tenant: str, client_id: str) -> str:
    """The key of a conversation's kernel in ``KERNELS_BUCKET`` (the default tenant ``*`` is ``default``)."""
    return f"{'default' if tenant == '*' else _checked(tenant)}.{_checked(client_id)}"


def turn_key(client_id: str, number: int) -> str:
    """The key of turn ``number`` (1, 2, ...) of a conversation in ``TURNS_BUCKET``."""
    return f"{_checked(client_id)}.{number}"


def client_id_of_subject(subject: str) -> str:
    """The clientId at the end of a per-client subject."""
    return subject.rsplit(".", 1)[-1]
