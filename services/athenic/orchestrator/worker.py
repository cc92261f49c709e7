"""The consume loop: every replica shares one durable pull consumer.

Each of ``ATHENIC_CONCURRENCY`` slots pulls one message at a time on its own pull
subscription (a lone message is picked up at once; nothing waits for a batch to fill),
keeps it alive with in-progress acks while it is answered, and acks only after the
response record is written. A crash means redelivery after ``ack_wait``; a retryable fault
means a nak with back-off; on the last allowed delivery a ``failed`` record is written and
the message terminated. On shutdown the slots stop pulling and drain their work.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

import msgspec
import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter, Gauge, Histogram

from athenic.orchestrator.errors import RetryableError, TerminalError
from athenic.orchestrator.events import EventPublisher
from athenic.orchestrator.job import ExecutionGate, Job
from athenic.orchestrator.planners.base import Answer, Planner
from athenic.orchestrator.policies import PolicyCache
from athenic.orchestrator.records import Build, RecordStore
from athenic.orchestrator.sandbox.base import SandboxBackend
from athenic.orchestrator.settings import OrchestratorSettings
from athenic.shared import names
from athenic.shared.broker import Broker
from athenic.shared.logging import bind_request, get_logger
from athenic.shared.messages import (
    ChatRequest,
    ChatResponse,
    ResponseRecord,
    chat_request_decoder,
    encode,
    iso_timestamp,
)
from athenic.shared.settings import NatsSettings

log = get_logger(__name__)

MESSAGES = Counter("athenic_orchestrator_messages_total", "Messages handled, by outcome", ["outcome"])
IN_FLIGHT = Gauge("athenic_orchestrator_in_flight", "Messages being answered now")
ANSWER_SECONDS = Histogram("athenic_orchestrator_answer_seconds", "Time to answer one message")


def retry_delay(delivered: int) -> float:
    """Back-off before the next delivery: 1, 2, 4 ... 30 s."""
    return float(min(2 ** max(delivered - 1, 0), 30))


@dataclass
class Outcome:
    status: Literal["completed", "failed", "cancelled"]
    answer: Answer | None = None
    error: str | None = None


class Worker:
    def __init__(
        self,
        settings: OrchestratorSettings,
        nats_settings: NatsSettings,
        broker: Broker,
        planner: Planner,
        sandbox: SandboxBackend,
        policies: PolicyCache,
        gate: ExecutionGate,
    ) -> None:
        self.settings = settings
        self.nats_settings = nats_settings
        self.broker = broker
        self.planner = planner
        self.sandbox = sandbox
        self.policies = policies
        self.gate = gate
        self.records = RecordStore(broker.bucket(names.RESPONSES_BUCKET))
        self.running: dict[str, set[Job]] = defaultdict(set)
        self.alive_at = asyncio.get_running_loop().time()

    async def run(self, stop: asyncio.Event) -> None:
        cancel_sub = await self.broker.nc.subscribe(f"{names.CANCEL_SUBJECT_PREFIX}.*", cb=self._on_cancel)
        slots = [asyncio.create_task(self._slot(i, stop), name=f"slot-{i}")
                 for i in range(self.settings.athenic_concurrency)]
        log.info("orchestrator consuming", concurrency=len(slots), planner=self.planner.name,
                 sandbox=self.sandbox.name)
        try:
            await stop.wait()
            # Slots finish the fetch they are in (at most the fetch timeout) and the message
            # they hold; past the drain period the work is cancelled and redelivered elsewhere.
            _, pending = await asyncio.wait(
                slots, timeout=self.settings.athenic_fetch_timeout_seconds + self.settings.athenic_drain_seconds
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*slots, return_exceptions=True)
            log.info("orchestrator drained", cancelled=len(pending))
        finally:
            with contextlib.suppress(nats.errors.Error):
                await cancel_sub.unsubscribe()

    async def _slot(self, index: int, stop: asyncio.Event) -> None:
        psub: JetStreamContext.PullSubscription | None = None
        try:
            while not stop.is_set():
                self.alive_at = asyncio.get_running_loop().time()
                try:
                    if psub is None:
                        psub = await self.broker.js.pull_subscribe_bind(
                            durable=names.ORCHESTRATOR_CONSUMER, stream=names.REQUEST_STREAM
                        )
                    msgs = await psub.fetch(1, timeout=self.settings.athenic_fetch_timeout_seconds)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                except (nats.errors.Error, OSError) as exc:
                    log.warning("fetch failed; retrying", slot=index, error=str(exc) or type(exc).__name__)
                    await asyncio.sleep(1)
                    continue
                for msg in msgs:
                    try:
                        await self.handle(msg)
                    except (nats.errors.Error, OSError, TimeoutError) as exc:
                        # The broker went away mid-answer (a record write or an ack failed): the
                        # message comes back after ack_wait; this slot must live to answer it.
                        log.warning("answer interrupted by a broker fault; it will be redelivered",
                                    slot=index, error=str(exc) or type(exc).__name__)
                    except Exception:
                        # A bug must not take the slot down with it: the message is redelivered
                        # after ack_wait and fails clearly on its last delivery.
                        log.exception("answer failed unexpectedly; it will be redelivered", slot=index)
        finally:
            if psub is not None:
                # a pull subscription left behind would hold up the connection's drain
                with contextlib.suppress(nats.errors.Error):
                    await psub.unsubscribe()

    async def handle(self, msg: Msg) -> None:
        meta = msg.metadata
        seq, delivered = meta.sequence.stream, meta.num_delivered
        try:
            request = chat_request_decoder.decode(msg.data)
        except msgspec.DecodeError as exc:
            log.error("undecodable request terminated", seq=seq, error=str(exc))
            await msg.term()
            MESSAGES.labels("undecodable").inc()
            return
        with bind_request(request_id=request.request_id, client_id=request.client_id, tenant=request.tenant):
            IN_FLIGHT.inc()
            keepalive = asyncio.create_task(self._keep_alive(msg))
            try:
                with ANSWER_SECONDS.time():
                    await self._answer(msg, request, seq, delivered)
            finally:
                keepalive.cancel()
                IN_FLIGHT.dec()

    async def _keep_alive(self, msg: Msg) -> None:
        interval = self.nats_settings.athenic_ack_wait_seconds / 3
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(nats.errors.Error):
                await msg.in_progress()

    async def _answer(self, msg: Msg, request: ChatRequest, seq: int, delivered: int) -> None:
        current, revision = await self.records.current(request.client_id)
        if current is not None and current.owner is not None and request.owner != current.owner:
            log.error("message for a clientId owned by another user terminated")
            await msg.term()
            MESSAGES.labels("foreign").inc()
            return
        stored = await self.records.write(request.client_id, seq, self._processing(request, seq),
                                          known=(current, revision))
        if stored is None:
            log.info("message superseded or already answered; acked without work", seq=seq)
            await msg.ack()
            MESSAGES.labels("superseded").inc()
            return
        log.info("answering", seq=seq, delivered=delivered)
        events = EventPublisher(self.broker, request.client_id, request.request_id)
        job = Job(request, self.settings, self.sandbox, events, self.policies.for_tenant(request.tenant),
                  self.gate)
        outcome = await self._run(job, delivered)
        if outcome is None:  # retry later
            await msg.nak(delay=retry_delay(delivered))
            MESSAGES.labels("retried").inc()
            return
        if await self.records.write(request.client_id, seq, self._final(request, seq, outcome, job),
                                    known=stored) is None:
            log.warning("the record holds a newer message or the first answer to this one; this answer is dropped",
                        seq=seq)
        await events.phase(outcome.status)
        if outcome.status == "failed" and outcome.answer is None:
            await msg.term()
        else:
            await msg.ack()
        MESSAGES.labels(outcome.status).inc()
        log.info("answered", seq=seq, status=outcome.status, executions=len(job.executions))

    async def _run(self, job: Job, delivered: int) -> Outcome | None:
        """Plan and run; ``None`` means a retryable fault with deliveries left."""
        client_id = job.request.client_id
        task: asyncio.Task[Answer] = asyncio.create_task(self.planner.answer(job.request, job))
        job.task = task
        self.running[client_id].add(job)
        try:
            return Outcome("completed", answer=await task)
        except asyncio.CancelledError:
            if not job.cancelled_by_user:
                task.cancel()
                raise
            return Outcome("cancelled", error="cancelled at the user's request")
        except TerminalError as exc:
            log.error("answer failed", error=str(exc))
            return Outcome("failed", error=str(exc))
        except Exception as exc:  # RetryableError, or a bug that may be transient
            last = delivered >= self.nats_settings.athenic_max_deliver
            if isinstance(exc, RetryableError):
                log.warning("retryable failure", error=str(exc), delivered=delivered, last_delivery=last)
            else:
                log.exception("unexpected failure", delivered=delivered, last_delivery=last)
            if not last:
                return None
            return Outcome("failed", error=f"gave up after {delivered} attempts: {exc}")
        finally:
            self.running[client_id].discard(job)
            if not self.running[client_id]:
                del self.running[client_id]

    @staticmethod
    def _processing(request: ChatRequest, seq: int) -> Build:
        def build(current: ResponseRecord | None) -> ResponseRecord:
            return ResponseRecord(
                last_message=request.message,
                last_response=current.last_response if current else None,
                requires_e2b=current.requires_e2b if current else False,
                status="processing",
                request_id=request.request_id,
                seq=seq,
                updated_at=iso_timestamp(),
                owner=(current.owner if current and current.owner else request.owner),
                tenant=request.tenant,
            )

        return build

    @staticmethod
    def _final(request: ChatRequest, seq: int, outcome: Outcome, job: Job) -> Build:
        answer = outcome.answer
        if answer is None:
            text = ("Your run was cancelled." if outcome.status == "cancelled"
                    else f"Sorry, I could not answer this message: {outcome.error}")
            answer = Answer(message=text, requires_e2b=bool(job.executions), executions=job.executions)
        response = ChatResponse(
            message=answer.message,
            requires_e2b=answer.requires_e2b,
            client_id=request.client_id,
            timestamp=iso_timestamp(),
            request_id=request.request_id,
            status=outcome.status,
            executions=answer.executions,
            error=outcome.error,
        )

        def build(current: ResponseRecord | None) -> ResponseRecord:
            return ResponseRecord(
                last_message=request.message,
                last_response=response,
                requires_e2b=response.requires_e2b,
                status=outcome.status,
                request_id=request.request_id,
                seq=seq,
                updated_at=response.timestamp,
                owner=(current.owner if current and current.owner else request.owner),
                tenant=request.tenant,
            )

        return build

    async def _on_cancel(self, msg: Msg) -> None:
        client_id = names.client_id_of_subject(msg.subject)
        cancelled = sum(job.cancel() for job in list(self.running.get(client_id, ())))
        if cancelled and msg.reply:
            await msg.respond(encode({"cancelled": cancelled}))
        if cancelled:
            log.info("run cancelled", client_id=client_id, jobs=cancelled)

