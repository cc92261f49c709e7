"""The Kubernetes side of the operator tests: kmock's emulator as the API server kopf relies
on, objects created, patched and deleted over HTTP as kubectl would, and the operator's own
``run`` started as asyncio tasks. The fixtures are in tests/support/fixtures/kubernetes.py."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jsonpatch
import kmock
from nats.aio.client import Client
from nats.js.kv import KeyValue

from athenic.shared.quotas import read_bucket
from athenic.shared.settings import NatsSettings, load
from athenic_operator.main import run
from athenic_operator.settings import OperatorSettings

QUOTAS = "athenic.dev/v1alpha1/sandboxquotas"
BASE = "/apis/athenic.dev/v1alpha1/namespaces"
NAMESPACE = "athenic"


class _Versions:
    """resourceVersions of the emulated API server: one counter for every write."""

    def __init__(self) -> None:
        self.current = 0

    def __next__(self) -> int:
        self.current += 1
        return self.current


_versions = _Versions()


class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator, plus what the API server does that kopf relies on: naming objects
    created with ``metadata.generateName`` (kopf's events; else the second one conflicts),
    a new ``resourceVersion`` on every write, 422 for a failed JSON-patch test, and a watch
    that starts at the version of the list before it (else kopf sees listed objects twice,
    the second time stale, and its optimistic finalizer patch fails)."""

    _suffixes = itertools.count(1)

    async def _handle(self, request: Any) -> Any:
        data = request.data
        if request.method in ("POST", "PATCH") and request.resource is not None:
            version = str(next(_versions))
            if isinstance(data, dict):
                meta = data.setdefault("metadata", {})
                if request.method == "POST" and not meta.get("name") and meta.get("generateName"):
                    meta["name"] = f"{meta['generateName']}{next(self._suffixes):05d}"
                meta["resourceVersion"] = version
            elif isinstance(data, list):  # a JSON patch
                data.append({"op": "replace", "path": "/metadata/resourceVersion", "value": version})
        try:
            return await super()._handle(request)
        except jsonpatch.JsonPatchTestFailed as exc:
            # kopf's optimistic patch lost a race: the API server answers 422, and kopf
            # retries on its next cycle (a 500 would make it resend the stale patch).
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(exc)) from exc

    async def _serve_list(self, request: Any) -> Any:
        payload: dict[str, Any] = await super()._serve_list(request)  # type: ignore[assignment]
        payload["metadata"]["resourceVersion"] = str(_versions.current)
        return payload

    async def _serve_watch(self, request: Any) -> Any:
        since_text = str(request.params.get("resourceVersion") or "0")
        since = int(since_text) if since_text.isdigit() else 0
        first = True
        async for event in super()._serve_watch(request):
            if first:  # the headers-flushing empty chunk
                first = False
                yield event
                continue
            if isinstance(event, dict) and event.get("type") == "ADDED":
                version = str(event["object"].get("metadata", {}).get("resourceVersion", "0"))
                if version.isdigit() and int(version) <= since:
                    continue  # already in the list the client started from
            yield event


def declare_resources(emulator: kmock.KubernetesEmulator) -> None:
    # kopf discovers these before it watches anything; undeclared, it waits forever.
    emulator.resources["v1/namespaces"] = kmock.ResourceInfo(
        kind="Namespace", singular="namespace", namespaced=False, verbs={"list", "watch", "get"})
    emulator.resources["v1/events"] = kmock.ResourceInfo(
        kind="Event", singular="event", namespaced=True, verbs={"create"})
    emulator.resources[QUOTAS] = kmock.ResourceInfo(
        kind="SandboxQuota", singular="sandboxquota", namespaced=True, shortnames={"sbq"},
        verbs={"list", "watch", "get", "patch", "create", "delete"}, subresources={"status"})
    emulator.objects["v1/namespaces", None, NAMESPACE] = {"metadata": {"name": NAMESPACE}}


def quota_body(name: str, spec: dict[str, Any], *, namespace: str = NAMESPACE, age_rank: int = 0) -> dict[str, Any]:
    """A SandboxQuota as the API server stores it (the fields it would set included)."""
    created = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(seconds=age_rank)
    return {
        "apiVersion": "athenic.dev/v1alpha1",
        "kind": "SandboxQuota",
        "metadata": {
            "name": name, "namespace": namespace, "uid": f"uid-{namespace}-{name}", "generation": 1,
            "resourceVersion": str(next(_versions)),
            "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "spec": spec,
    }




@dataclass
class Cluster:
    """The emulated API server, spoken to over HTTP."""

    emulator: kmock.KubernetesEmulator

    async def request(self, method: str, path: str, **kwargs: Any) -> None:
        # A connection per request (kubectl-like): a pooled one can be left half-closed by
        # the server after a client of it (an operator) was cancelled mid-stream.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session, \
                session.request(method, f"{str(self.emulator.url).rstrip('/')}{path}", **kwargs) as rsp:
            assert rsp.status < 300, await rsp.text()

    async def create(self, body: dict[str, Any]) -> None:
        ns = body["metadata"]["namespace"]
        await self.request("POST", f"{BASE}/{ns}/sandboxquotas", json=body)

    async def update_spec(self, name: str, spec: dict[str, Any], *, namespace: str = NAMESPACE) -> None:
        current = self.get(name, namespace=namespace)
        assert current is not None
        meta = current["metadata"]
        patch = {"spec": spec, "metadata": {"generation": meta.get("generation", 1) + 1,
                                            "resourceVersion": str(next(_versions))}}
        await self.request("PATCH", f"{BASE}/{namespace}/sandboxquotas/{name}", json=patch,
                           headers={"Content-Type": "application/merge-patch+json"})

    async def delete(self, name: str, *, namespace: str = NAMESPACE) -> None:
        await self.request("DELETE", f"{BASE}/{namespace}/sandboxquotas/{name}")

    def body(self, name: str, *, namespace: str = NAMESPACE) -> dict[str, Any]:
        found = self.get(name, namespace=namespace)
        assert found is not None, f"no SandboxQuota {namespace}/{name}"
        return found

    def get(self, name: str, *, namespace: str = NAMESPACE) -> dict[str, Any] | None:
        key = (kmock.resource(QUOTAS), namespace, name)
        if key not in self.emulator.objects or self.emulator.objects[key].deleted:
            return None
        raw: dict[str, Any] = self.emulator.objects[key].raw
        return raw

    def status(self, name: str, *, namespace: str = NAMESPACE) -> dict[str, Any]:
        body = self.get(name, namespace=namespace) or {}
        status: dict[str, Any] = body.get("status") or {}
        return status

    def ready(self, name: str, *, namespace: str = NAMESPACE) -> dict[str, Any]:
        conditions = self.status(name, namespace=namespace).get("conditions") or []
        return next((c for c in conditions if c.get("type") == "Ready"), {})

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for (resource, _, _), obj in self.emulator.objects.items():
            if resource == "v1/events" and not obj.deleted:
                raw = obj.raw
                if raw.get("involvedObject", {}).get("name") == name:
                    found.append(raw)
        return found

    def event_reasons(self, name: str) -> list[str]:
        return [event.get("reason", "") for event in self.events(name)]






@dataclass
class PolicyBuckets:
    """The test's own connection to the buckets the operator writes (policies) and reads (leases)."""

    nc: Client
    policies: KeyValue
    leases: KeyValue

    async def policy_keys(self) -> dict[str, bytes]:
        return {key: stored.value for key, stored in (await read_bucket(self.policies)).items()}




@dataclass
class Operators:
    """Start the operator (the same ``run`` as ``athenic-operator``) as asyncio tasks."""

    nats_url: str
    api_url: str
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self, **env: str) -> asyncio.Task[None]:
        environ = {
            "ATHENIC_OPERATOR_KUBE_API_URL": self.api_url,
            "ATHENIC_OPERATOR_STANDALONE": "true",
            "ATHENIC_OPERATOR_LIVENESS_PORT": "0",
            "ATHENIC_OPERATOR_USAGE_INTERVAL_SECONDS": "0.5",
            **env,
        }
        ready = asyncio.Event()
        task = asyncio.create_task(run(load(OperatorSettings, environ),
                                       load(NatsSettings, {"NATS_URL": self.nats_url}), ready_flag=ready))
        self.tasks.append(task)
        await asyncio.wait_for(ready.wait(), 10)  # startup handlers done: NATS connected
        return task

    async def stop(self, task: asyncio.Task[None]) -> None:
        # Cancelled rather than flagged: kopf's graceful stop waits on its watch streams.
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 10)
        if task in self.tasks:
            self.tasks.remove(task)

