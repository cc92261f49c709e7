"""Each service's NATS user, as the chart renders it, run by a real nats-server: it can do its
job, and it cannot do another's.

The jobs are done with the services' own names and provisioning (names.py, topology.py); a
refusal is the server's: a permissions violation reported to the client, and the operation fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client
from nats.js.kv import KeyValue

from athenic.notifier.fanout import following
from athenic.shared import names
from athenic.shared.devices import DeviceRegistry
from athenic.shared.files import FileStore
from athenic.shared.messages import TurnFinished
from athenic.shared.settings import NatsSettings, load
from athenic.shared.topology import bucket_configs, ensure_bucket, ensure_object_stores, ensure_topology
from athenic_operator.usage import read_usage
from tests.chart.manifests import Manifest, named
from tests.support.nats import NatsServer, free_port

pytestmark = pytest.mark.integration

Render = Callable[..., list[Manifest]]
PASSWORDS = {"api": "api-secret", "orchestrator": "orchestrator-secret", "operator": "operator-secret",
             "notifier": "notifier-secret"}
REFUSAL_SECONDS = 1.0
WAIT_SECONDS = 20.0


@pytest.fixture
def server(render: Render, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NatsServer]:
    conf = named(render("defaults"), "ConfigMap", "athenic-nats-config")["data"]["nats.conf"]
    path = tmp_path / "nats.conf"
    path.write_text(conf.replace("store_dir: /data\n", ""))
    # what the StatefulSet's environment gives the server (from the nats-auth Secret)
    monkeypatch.setenv("SERVER_NAME", "athenic-nats-0")
    monkeypatch.setenv("NATS_USER", "athenic")
    monkeypatch.setenv("NATS_PASSWORD", "route-secret")
    for user, password in PASSWORDS.items():
        monkeypatch.setenv(f"NATS_{user.upper()}_PASSWORD", password)
    with NatsServer(tmp_path / "store", extra_args=["-c", str(path), "-m", str(free_port()),
                                                   "-P", str(tmp_path / "nats.pid")]) as started:
        yield started


class Login:
    """A connection as one service's user, keeping the server's permission errors."""

    def __init__(self, nc: Client, violations: list[str]) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=REFUSAL_SECONDS)
        self.violations = violations

    async def refused(self, subject: str, attempt: Callable[[], Awaitable[Any]]) -> None:
        """``attempt`` fails and the server says it refused ``subject``."""
        before = len(self.violations)
        # (nats-py reports a refused request as a timeout: the server drops it)
        with pytest.raises((TimeoutError, nats.errors.Error)):
            await asyncio.wait_for(attempt(), REFUSAL_SECONDS * 3)
        await self.violation(subject, before)

    async def violation(self, subject: str, before: int = 0) -> None:
        async def seen() -> None:
            while not any(subject.lower() in text.lower() for text in self.violations[before:]):  # nats-py lowercases
                await asyncio.sleep(0.01)

        try:
            await asyncio.wait_for(seen(), WAIT_SECONDS)
        except TimeoutError:
            pytest.fail(f"no permissions violation for {subject!r}; the server said {self.violations[before:]}")


@pytest.fixture
async def login(server: NatsServer) -> AsyncIterator[Callable[[str], Awaitable[Login]]]:
    opened: list[Client] = []

    async def connect(user: str) -> Login:
        violations: list[str] = []

        async def on_error(exc: Exception) -> None:
            violations.append(str(exc))

        nc = await nats.connect(server.url, user=user, password=PASSWORDS[user], error_cb=on_error,
                                allow_reconnect=False)
        opened.append(nc)
        return Login(nc, violations)

    yield connect
    for nc in opened:
        await nc.close()


SETTINGS = load(NatsSettings, {"NATS_REPLICAS": "1"})
TOKEN = "fcm-registration-token-" + "a" * 40


async def bucket(who: Login, name: str) -> KeyValue:
    return await who.js.key_value(name)


async def test_each_service_provisions_what_it_uses(login: Callable[[str], Awaitable[Login]]) -> None:
    api, orchestrator, operator = await login("api"), await login("orchestrator"), await login("operator")
    notifier = await login("notifier")
    # whichever starts first creates the topology; the others find it
    await ensure_topology(api.js, SETTINGS)
    await ensure_topology(orchestrator.js, SETTINGS)
    await ensure_topology(notifier.js, SETTINGS)
    configs = bucket_configs(SETTINGS)
    await ensure_bucket(operator.js, configs[names.POLICIES_BUCKET])
    await ensure_bucket(operator.js, configs[names.LEASES_BUCKET])
    for who in (api, orchestrator, operator, notifier):
        assert who.violations == []


async def test_a_message_goes_from_api_to_orchestrator_and_back(login: Callable[[str], Awaitable[Login]]) -> None:
    api, orchestrator, operator = await login("api"), await login("orchestrator"), await login("operator")
    await ensure_topology(orchestrator.js, SETTINGS)
    client_id = "conversation-1"
    # operator: publishes a tenant's policy and reads the leases (usage)
    await (await bucket(operator, names.POLICIES_BUCKET)).put("default", b'{"maxConcurrentExecutions": 2}')
    leases = await bucket(operator, names.LEASES_BUCKET)
    await orchestrator.js.publish(f"$KV.{names.LEASES_BUCKET}.default.lease-1", b"{}")
    assert (await leases.get("default.lease-1")).value == b"{}"
    await read_usage(leases)  # the operator's own scan of the leases (a KV watch) for .status.used

    # api: claims the conversation, hears its events, watches its record, publishes the request
    await (await bucket(api, names.CONVERSATIONS_BUCKET)).create(client_id, b'{"owner": "u"}')
    await (await bucket(api, names.IDEMPOTENCY_BUCKET)).create("key-1", b"request-1")
    events: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_event(msg: Any) -> None:
        await events.put(msg.data)

    await api.nc.subscribe(names.event_subject(client_id), cb=on_event)
    watcher = await (await bucket(api, names.RESPONSES_BUCKET)).watch(client_id)
    assert await watcher.updates(timeout=WAIT_SECONDS) is None  # the end of the (no) initial values
    ack = await api.js.publish(names.request_subject(client_id), b'{"message": "hi"}',
                               headers={names.HDR_MSG_ID: "request-1"})
    assert (await api.js.get_msg(names.REQUEST_STREAM, seq=ack.seq)).data == b'{"message": "hi"}'

    # orchestrator: answers cancels, reads the policy, fetches and acks the request, writes the record
    async def on_cancel(msg: Any) -> None:
        await msg.respond(b'{"cancelled": false}')

    await orchestrator.nc.subscribe(f"{names.CANCEL_SUBJECT_PREFIX}.*", cb=on_cancel)
    await orchestrator.nc.flush()
    policy = await (await bucket(orchestrator, names.POLICIES_BUCKET)).get("default")
    assert msgspec.json.decode(policy.value or b"{}") == {"maxConcurrentExecutions": 2}
    work = await orchestrator.js.pull_subscribe_bind(durable=names.ORCHESTRATOR_CONSUMER, stream=names.REQUEST_STREAM)
    [request] = await work.fetch(1, timeout=WAIT_SECONDS)
    assert request.subject == names.request_subject(client_id)
    await request.ack_sync(timeout=WAIT_SECONDS)
    await orchestrator.nc.publish(names.event_subject(client_id), b'{"type": "status"}')
    await orchestrator.nc.publish(names.advanced_subject(client_id), b"")
    await (await bucket(orchestrator, names.TURNS_BUCKET)).put(names.turn_key(client_id, 1), b"{}")
    await (await bucket(orchestrator, names.RESPONSES_BUCKET)).put(client_id, b'{"status": "completed"}')

    # api: sees all of it
    assert await asyncio.wait_for(events.get(), WAIT_SECONDS) == b'{"type": "status"}'
    update = await watcher.updates(timeout=WAIT_SECONDS)
    assert update is not None and update.value == b'{"status": "completed"}'
    assert (await (await bucket(api, names.RESPONSES_BUCKET)).get(client_id)).value == b'{"status": "completed"}'
    assert (await (await bucket(api, names.TURNS_BUCKET)).get(names.turn_key(client_id, 1))).value == b"{}"
    reply = await api.nc.request(names.cancel_subject(client_id), b"", timeout=WAIT_SECONDS)
    assert reply.data == b'{"cancelled": false}'
    for who in (api, orchestrator, operator):
        assert who.violations == [], who.violations


async def test_files_devices_and_open_streams_are_listed_by_the_services_that_list_them(
        login: Callable[[str], Awaitable[Login]]) -> None:
    """The listings read the bucket's subjects and then each key: no consumer, so no watch
    permission on the file index, the devices or the presence bucket."""
    api, orchestrator, notifier = await login("api"), await login("orchestrator"), await login("notifier")
    await ensure_topology(api.js, SETTINGS)
    client_id = "conversation-1"

    def files_of(who: Login) -> Awaitable[FileStore]:
        async def opened() -> FileStore:
            return FileStore(await who.js.object_store(names.FILES_BUCKET),
                             await bucket(who, names.FILE_INDEX_BUCKET), who.js)
        return opened()

    await ensure_object_stores(api.js, SETTINGS)
    await (await files_of(api)).put(client_id, "data.csv", b"a,b\n", "text/csv")
    for who in (api, orchestrator):
        assert [item.name for item in await (await files_of(who)).list(client_id)] == ["data.csv"]
    await (await bucket(api, names.PRESENCE_BUCKET)).put(f"{client_id}.session-1", b'{"user": "u"}')
    devices = DeviceRegistry(await bucket(api, names.DEVICES_BUCKET), api.js)
    await devices.register("u", "fcm", TOKEN)
    event = TurnFinished(client_id=client_id, request_id="request-1", owner="u", tenant="default",
                         status="completed", timestamp="2026-12-02T00:00:00Z")
    assert await following(notifier.js, await bucket(notifier, names.PRESENCE_BUCKET), event)
    mine = await DeviceRegistry(await bucket(notifier, names.DEVICES_BUCKET), notifier.js).of_user("u")
    assert [device.token for _, device in mine] == [TOKEN]
    for who in (api, orchestrator, notifier):
        assert who.violations == [], who.violations


async def test_the_api_cannot_do_the_orchestrators_or_the_operators_work(
        login: Callable[[str], Awaitable[Login]]) -> None:
    api = await login("api")
    await ensure_topology(api.js, SETTINGS)
    policies = f"$KV.{names.POLICIES_BUCKET}.default"
    await api.refused(policies, lambda: api.js.publish(policies, b'{"maxConcurrentExecutions": 1000}'))
    record = f"$KV.{names.RESPONSES_BUCKET}.someone"
    await api.refused(record, lambda: api.js.publish(record, b'{"message": "forged"}'))
    lease = f"$KV.{names.LEASES_BUCKET}.default.x"
    await api.refused(lease, lambda: api.js.publish(lease, b"{}"))
    work = await api.js.pull_subscribe_bind(durable=names.ORCHESTRATOR_CONSUMER, stream=names.REQUEST_STREAM)
    fetch = f"$JS.API.CONSUMER.MSG.NEXT.{names.REQUEST_STREAM}.{names.ORCHESTRATOR_CONSUMER}"
    await api.refused(fetch, lambda: work.fetch(1, timeout=REFUSAL_SECONDS))
    delete = f"$JS.API.STREAM.DELETE.{names.REQUEST_STREAM}"
    await api.refused(delete, lambda: api.js.delete_stream(names.REQUEST_STREAM))
    await api.nc.subscribe(f"{names.REQUEST_SUBJECT_PREFIX}.>")
    await api.violation(f"{names.REQUEST_SUBJECT_PREFIX}.>")


async def test_the_orchestrator_cannot_write_policies_or_accept_messages(
        login: Callable[[str], Awaitable[Login]]) -> None:
    orchestrator = await login("orchestrator")
    await ensure_topology(orchestrator.js, SETTINGS)
    policies = f"$KV.{names.POLICIES_BUCKET}.default"
    await orchestrator.refused(policies, lambda: orchestrator.js.publish(policies, b"{}"))
    request = names.request_subject("someone")
    await orchestrator.refused(request, lambda: orchestrator.js.publish(request, b'{"message": "forged"}'))
    purge = f"$JS.API.STREAM.PURGE.{names.REQUEST_STREAM}"
    await orchestrator.refused(purge, lambda: orchestrator.js.purge_stream(names.REQUEST_STREAM))


async def test_the_operator_cannot_read_requests_or_records(login: Callable[[str], Awaitable[Login]]) -> None:
    orchestrator, operator = await login("orchestrator"), await login("operator")
    await ensure_topology(orchestrator.js, SETTINGS)
    ack = await orchestrator.js.publish(f"$KV.{names.RESPONSES_BUCKET}.someone", b"{}")
    assert ack.seq
    records = f"$JS.API.STREAM.INFO.KV_{names.RESPONSES_BUCKET}"
    await operator.refused(records, lambda: operator.js.key_value(names.RESPONSES_BUCKET))
    read = f"$JS.API.STREAM.MSG.GET.{names.REQUEST_STREAM}"
    await operator.refused(read, lambda: operator.js.get_msg(names.REQUEST_STREAM, seq=1))
    work = await operator.js.pull_subscribe_bind(durable=names.ORCHESTRATOR_CONSUMER, stream=names.REQUEST_STREAM)
    fetch = f"$JS.API.CONSUMER.MSG.NEXT.{names.REQUEST_STREAM}"
    await operator.refused(fetch, lambda: work.fetch(1, timeout=REFUSAL_SECONDS))
    await operator.nc.subscribe(f"{names.EVENT_SUBJECT_PREFIX}.*")
    await operator.violation(f"{names.EVENT_SUBJECT_PREFIX}.*")
    request = names.request_subject("someone")
    await operator.refused(request, lambda: operator.js.publish(request, b"{}"))
