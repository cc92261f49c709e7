"""One kernel per conversation whichever orchestrator answers its message.

A conversation's local kernel lives on one orchestrator, its host; ``KERNELS_BUCKET`` records
which (``<tenant>.<clientId>`` -> the host's id, a fresh id per process). The host serves runs
on its own subject (``athenic.kernels.<host>.run``, request/reply; output chunks stream to an
inbox the request names, and the last chunk comes before the reply). The replica that answers
a message runs the code locally when it is the host or the conversation has no kernel yet
(and records itself), else forwards the run to the host. When the host is gone (no responder
on its subject: it stopped or crashed; or it does not answer within the run's time limit and a
margin), the answering replica records itself, runs the code in a fresh kernel, and the
execution's ``notice`` says the state was lost. A host that stops (a rollout) keeps serving
forwarded runs while its worker drains, and closes its kernels after it: the next message of
each of its conversations finds no responder and says so.

Other languages, and a backend without kernels, run where the message is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from athenic.orchestrator.errors import RetryableError
from athenic.orchestrator.sandbox.base import OutputSink, RunSpec, SandboxBackend
from athenic.orchestrator.sandbox.kernels import notice
from athenic.orchestrator.sandbox.local import LocalSandbox
from athenic.orchestrator.sandbox.output import OutputForwarder
from athenic.shared import names
from athenic.shared.broker import Broker
from athenic.shared.logging import get_logger
from athenic.shared.messages import Execution, KernelHome, KernelOutput, KernelReply, KernelRun, encode
from athenic.shared.timeouts import within

log = get_logger(__name__)

# how much longer than the run's time limit a forwarded run may take before its host counts as gone
FORWARD_MARGIN_SECONDS = 15.0
# after the reply, how long the last output chunks may still arrive
_END_SECONDS = 1.0
# a home looked up ahead (``prepare``) serves a run that starts within this long; else it is read again
AHEAD_SECONDS = 1.0
HOST_GONE = "was on an orchestrator that is gone (stopped or crashed)"

_home_decoder = msgspec.json.Decoder(KernelHome)
_run_decoder = msgspec.json.Decoder(KernelRun)
_output_decoder = msgspec.json.Decoder(KernelOutput)
_reply_decoder = msgspec.json.Decoder(KernelReply)


async def route_kernels(sandbox: SandboxBackend, broker: Broker) -> SandboxBackend:
    """The backend the worker uses: kernels routed across replicas when the local one keeps any."""
    if not isinstance(sandbox, LocalSandbox) or sandbox.kernels is None:
        return sandbox
    routed = RoutedKernels(sandbox, broker.nc, broker.bucket(names.KERNELS_BUCKET))
    await routed.start()
    return routed


class RoutedKernels:
    """The local backend, with each conversation's Python runs sent to its kernel's host."""

    def __init__(self, local: LocalSandbox, nc: Client, kv: KeyValue, host: str | None = None) -> None:
        self.local = local
        self.name = local.name
        self.languages = local.languages
        self.host = host or uuid.uuid4().hex[:16]
        self._nc = nc
        self._kv = kv
        self._subs: list[Subscription] = []
        self._serving: dict[str, asyncio.Task[None]] = {}
        self._ahead: dict[str, tuple[float, asyncio.Task[KernelHome | None]]] = {}  # homes looked up ahead

    async def start(self) -> None:
        self._subs = [
            await self._nc.subscribe(names.kernel_run_subject(self.host), cb=self._on_run),
            await self._nc.subscribe(names.kernel_cancel_subject(self.host), cb=self._on_cancel),
        ]
        log.info("kernel host serving", host=self.host)

    async def run(self, spec: RunSpec, on_output: OutputSink | None = None) -> Execution:
        kernels = self.local.kernels
        if kernels is None or spec.language != "python":
            return await self.local.run(spec, on_output)
        key = names.kernel_key(spec.tenant, spec.client_id)
        home = await self._looked_up(key)
        if home is None or home.host == self.host:
            if home is None:
                await self._claim(key)
            return await self.local.run(spec, on_output)
        # (a kernel of ours another replica took over while we did not answer is stale now)
        kernels.forget(spec.tenant, spec.client_id)
        execution = await self._forward(home.host, spec, on_output)
        if execution is not None:
            return execution
        log.info("kernel host gone; taking the conversation over", host=home.host, client_id=spec.client_id)
        await self._claim(key)
        execution = await self.local.run(spec, on_output)
        if execution.notice is None:
            execution = msgspec.structs.replace(execution, notice=notice(HOST_GONE))
        return execution

    def prepare(self, tenant: str, client_id: str, language: str) -> None:
        """Look the conversation's kernel home up while its run waits for the quota."""
        if self.local.kernels is None or language != "python":
            return
        now = asyncio.get_running_loop().time()
        for stale in [key for key, (at, _) in self._ahead.items() if now - at >= AHEAD_SECONDS]:
            self._ahead.pop(stale)[1].cancel()  # (a run that never came: refused, cancelled)
        key = names.kernel_key(tenant, client_id)
        if key not in self._ahead:
            lookup = asyncio.create_task(self._home(key), name=f"kernel-home-{key}")
            lookup.add_done_callback(lambda task: task.cancelled() or task.exception())  # (seen by its run)
            self._ahead[key] = (now, lookup)

    async def _looked_up(self, key: str) -> KernelHome | None:
        """The home looked up ahead when it is recent, else read now."""
        at, lookup = self._ahead.pop(key, (0.0, None))
        if lookup is not None:
            if asyncio.get_running_loop().time() - at < AHEAD_SECONDS:
                return await lookup
            lookup.cancel()
        return await self._home(key)

    async def aclose(self) -> None:
        for _, lookup in self._ahead.values():
            lookup.cancel()
        self._ahead.clear()
        for sub in self._subs:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        for task in list(self._serving.values()):
            task.cancel()
        await asyncio.gather(*self._serving.values(), return_exceptions=True)
        await self.local.aclose()

    async def _home(self, key: str) -> KernelHome | None:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        except (TimeoutError, nats.errors.Error) as exc:
            raise RetryableError(f"could not look up the conversation's kernel: {exc}") from exc
        try:
            return _home_decoder.decode(entry.value or b"")
        except msgspec.DecodeError:
            return None

    async def _claim(self, key: str) -> None:
        try:
            await self._kv.put(key, encode(KernelHome(host=self.host)))
        except (TimeoutError, nats.errors.Error) as exc:
            raise RetryableError(f"could not record the conversation's kernel: {exc}") from exc

    async def _forward(self, host: str, spec: RunSpec, on_output: OutputSink | None) -> Execution | None:
        """The execution from the host; None when the host is gone."""
        forward = OutputForwarder(on_output)
        ended = asyncio.Event()
        chunks: asyncio.Queue[KernelOutput] = asyncio.Queue()

        async def on_chunk(msg: Msg) -> None:
            with contextlib.suppress(msgspec.DecodeError):
                chunks.put_nowait(_output_decoder.decode(msg.data))

        async def pump() -> None:
            while (chunk := await chunks.get()).stream != "end":
                await forward(chunk.stream, chunk.text)
            ended.set()

        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox, cb=on_chunk)
        pumping = asyncio.create_task(pump())
        run = KernelRun(run_id=uuid.uuid4().hex, client_id=spec.client_id, tenant=spec.tenant, language=spec.language,
                        code=spec.code, timeout_seconds=spec.timeout_seconds, memory_mib=spec.memory_mib,
                        idle_seconds=spec.idle_seconds, output=inbox)
        try:
            reply = await self._nc.request(names.kernel_run_subject(host), encode(run),
                                           timeout=spec.timeout_seconds + FORWARD_MARGIN_SECONDS)
            with contextlib.suppress(TimeoutError):
                await within(ended.wait(), _END_SECONDS)
        except asyncio.CancelledError:
            with contextlib.suppress(nats.errors.Error):
                await self._nc.publish(names.kernel_cancel_subject(host), run.run_id.encode())
            raise
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            return None
        finally:
            pumping.cancel()
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        answer = _reply_decoder.decode(reply.data)
        if answer.execution is None:
            raise RetryableError(f"the kernel's host could not run the code: {answer.error}")
        log.info("kernel run forwarded", host=host, client_id=spec.client_id)
        return answer.execution

    async def _on_run(self, msg: Msg) -> None:
        try:
            run = _run_decoder.decode(msg.data)
        except msgspec.DecodeError:
            log.warning("undecodable forwarded kernel run dropped")
            return
        task = asyncio.create_task(self._serve(msg, run))
        self._serving[run.run_id] = task
        task.add_done_callback(lambda _task: self._serving.pop(run.run_id, None))

    async def _on_cancel(self, msg: Msg) -> None:
        task = self._serving.get(msg.data.decode(errors="replace"))
        if task is not None:
            task.cancel()

    async def _serve(self, msg: Msg, run: KernelRun) -> None:
        async def output(stream: str, text: str) -> None:
            await self._nc.publish(run.output, encode(KernelOutput(stream=stream, text=text)))  # type: ignore[arg-type]

        spec = RunSpec(client_id=run.client_id, tenant=run.tenant, language=run.language, code=run.code,
                       timeout_seconds=run.timeout_seconds, memory_mib=run.memory_mib, idle_seconds=run.idle_seconds)
        try:
            execution = await self.local.run(spec, output)
            reply = KernelReply(execution=execution)
        except RetryableError as exc:
            reply = KernelReply(error=str(exc))
        with contextlib.suppress(nats.errors.Error):
            await self._nc.publish(run.output, encode(KernelOutput(stream="end")))
            await msg.respond(encode(reply))
