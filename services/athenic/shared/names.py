"""Every NATS name the services use, defined once.

A clientId is validated against ``CLIENT_ID_PATTERN`` before it is ever placed in a
subject or a KV key, so no caller can reach another subject with ``.``, ``*`` or ``>``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final
from urllib.parse import quote

# The one shape of every name that reaches a subject or a key: a clientId, a tenant, a lease id.
NAME: Final = r"[A-Za-z0-9_-]{1,128}"
NAME_RE: Final = re.compile(NAME)  # .fullmatch: the whole value
CLIENT_ID_PATTERN: Final = rf"^{NAME}$"
CLIENT_ID_RE: Final = re.compile(CLIENT_ID_PATTERN)

# The tenant of a caller whose token names none (and of every caller when auth is off).
ANONYMOUS_TENANT: Final = "default"
# The SandboxQuota tenant that applies to every tenant without a quota of its own.
WILDCARD_TENANT: Final = "*"
TENANT_PATTERN: Final = rf"^(\{WILDCARD_TENANT}|{NAME})$"

# The request stream: work-queue retention, one subject per client.
REQUEST_STREAM: Final = "ATHENIC_REQUESTS"
REQUEST_SUBJECT_PREFIX: Final = "athenic.requests"
REQUEST_SUBJECTS: Final = f"{REQUEST_SUBJECT_PREFIX}.*"

# The durable pull consumer every orchestrator replica shares.
ORCHESTRATOR_CONSUMER: Final = "orchestrator"

# Progress events (core NATS, not persisted): status changes and output chunks per client.
EVENT_SUBJECT_PREFIX: Final = "athenic.events"

# Every stored change of a response record, republished by the server from the responses
# bucket's stream with its revision (header ``Nats-Sequence``): an api replica subscribes (core
# NATS, no consumer) to the record subjects of the conversations its sockets follow, and to nothing else.
RECORD_SUBJECT_PREFIX: Final = "athenic.records"
HDR_SEQUENCE: Final = "Nats-Sequence"  # set by the server on a republished message: the KV revision

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
# E2B sandboxes: <clientId> -> its sandbox (id, state, last use); pool.<shape>.<slot> -> a warm one.
SANDBOXES_BUCKET: Final = "athenic_sandboxes"

# Notifications (issue 15): one stream holds "a turn is finished" events (one subject per
# tenant and conversation, deduplicated by request id) and the delivery work items the
# notifier fans them out to (a push to one device, one webhook call), each consumed by its
# own durable pull consumer shared by every notifier replica.
NOTIFY_STREAM: Final = "ATHENIC_NOTIFICATIONS"
FINISHED_SUBJECT_PREFIX: Final = "athenic.notify.finished"
DELIVERY_SUBJECT_PREFIX: Final = "athenic.notify.deliver"
NOTIFIER_EVENTS_CONSUMER: Final = "notifier-events"
NOTIFIER_DELIVERIES_CONSUMER: Final = "notifier-deliveries"
DELIVERY_KINDS: Final = ("fcm", "apns", "webhook")
# Registered devices: <hash of the user>.<hash of the token> -> the device (TTL: the registration's).
DEVICES_BUCKET: Final = "athenic_devices"
# Open WebSockets/SSE streams: <clientId>.<session id> -> the api replica's heartbeat (short TTL).
PRESENCE_BUCKET: Final = "athenic_presence"

# Object Store bucket of conversation files: one object per file, named <clientId>/<name>.
FILES_BUCKET: Final = "athenic_files"
# ... and their metadata per conversation, <clientId>.<hash of the name> -> FileInfo (no bytes): the
# Object Store can only list a whole bucket, a KV watch of <clientId>.* lists one conversation.
FILE_INDEX_BUCKET: Final = "athenic_file_index"
# Where a file is served (relative to the api's origin); ``name`` is percent-encoded.
FILES_ROUTE_PREFIX: Final = "/api/chat"

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


def _hashed(text: str) -> str:
    """A fixed-length key token for text no key may hold as it is (user ids, device tokens)."""
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def _tenant_token(tenant: str) -> str:
    return tenant if NAME_RE.fullmatch(tenant) else f"h{_hashed(tenant)}"


def valid_client_id(client_id: str) -> bool:
    return CLIENT_ID_RE.fullmatch(client_id) is not None


def checked(value: str, kind: str = "clientId") -> str:
    """``value`` when it may stand in a subject or a key (``NAME``: a clientId, a tenant, a lease
    id, a host), else ``ValueError`` naming what it was meant to be."""
    if NAME_RE.fullmatch(value) is None:
        raise ValueError(f"invalid {kind} {value!r}")
    return value


def request_subject(client_id: str) -> str:
    return f"{REQUEST_SUBJECT_PREFIX}.{checked(client_id)}"


def event_subject(client_id: str) -> str:
    return f"{EVENT_SUBJECT_PREFIX}.{checked(client_id)}"


def record_subject(client_id: str) -> str:
    """Where the changes of ``client_id``'s response record are republished."""
    return f"{RECORD_SUBJECT_PREFIX}.{checked(client_id)}"


def kv_subject(bucket: str, key: str) -> str:
    """The subject a KV bucket stores ``key`` under (``>`` for all its keys), as NATS defines it."""
    return f"$KV.{bucket}.{key}"


def cancel_subject(client_id: str) -> str:
    return f"{CANCEL_SUBJECT_PREFIX}.{checked(client_id)}"


def advanced_subject(client_id: str) -> str:
    return f"{ADVANCED_SUBJECT_PREFIX}.{checked(client_id)}"


def kernel_run_subject(host: str) -> str:
    return f"{KERNEL_SUBJECT_PREFIX}.{checked(host, 'host')}.run"


def kernel_cancel_subject(host: str) -> str:
    return f"{KERNEL_SUBJECT_PREFIX}.{checked(host, 'host')}.cancel"


def kernel_key(tenant: str, client_id: str) -> str:
    """The key of a conversation's kernel in ``KERNELS_BUCKET`` (the default tenant ``*`` is ``default``)."""
    return f"{'default' if tenant == '*' else checked(tenant, 'tenant')}.{checked(client_id)}"


def turn_key(client_id: str, number: int) -> str:
    """The key of turn ``number`` (1, 2, ...) of a conversation in ``TURNS_BUCKET``."""
    return f"{checked(client_id)}.{number}"


def file_url(client_id: str, name: str) -> str:
    """The api route that serves a conversation file."""
    return f"{FILES_ROUTE_PREFIX}/{checked(client_id)}/files/{quote(name, safe='')}"


def file_index_key(client_id: str, name: str) -> str:
    return f"{checked(client_id)}.{hashlib.sha256(name.encode()).hexdigest()[:40]}"


def client_id_of_subject(subject: str) -> str:
    """The clientId at the end of a per-client subject."""
    return subject.rsplit(".", 1)[-1]


def finished_subject(tenant: str, client_id: str) -> str:
    """Where "a turn of this conversation is finished" is published (tenant made key-safe)."""
    return f"{FINISHED_SUBJECT_PREFIX}.{_tenant_token(tenant)}.{checked(client_id)}"


def delivery_subject(kind: str) -> str:
    if kind not in DELIVERY_KINDS:
        raise ValueError(f"unknown delivery kind {kind!r}")
    return f"{DELIVERY_SUBJECT_PREFIX}.{kind}"


def devices_prefix(user: str | None) -> str:
    """The key prefix of one user's devices (the anonymous user of auth-off has one too)."""
    return _hashed("user:" + user) if user is not None else "anonymous"


def device_token_hash(token: str) -> str:
    return _hashed("token:" + token)


def device_key(user: str | None, token: str) -> str:
    return f"{devices_prefix(user)}.{device_token_hash(token)}"


def presence_key(client_id: str, session: str) -> str:
    return f"{checked(client_id)}.{_hashed(session)}"


def kv_stream(bucket: str) -> str:
    """The JetStream stream that holds a KV bucket (as NATS names it)."""
    return f"KV_{bucket}"


def object_store_stream(bucket: str) -> str:
    """The JetStream stream that holds an Object Store bucket (as NATS names it)."""
    return f"OBJ_{bucket}"
