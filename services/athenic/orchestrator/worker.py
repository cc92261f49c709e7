"""The consume loop: every replica shares one durable pull consumer.

Each of ``ATHENIC_CONCURRENCY`` slots pulls one message at a time on its own pull
subscription (a lone message is picked up at once; nothing waits for a batch to fill),
keeps it alive with in-progress acks while it is answered, and acks only after the
response record and the turn are written. A conversation's messages are answered one at a
time in submission order (``turn_order.py``): a message behind an earlier one of its
conversation waits without holding its slot. A crash means redelivery after ``ack_wait``; a
retryable fault means a nak with back-off; on the last allowed attempt a ``failed`` answer is
written. On shutdown the slots stop pulling and drain their work; waiting messages go back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable

import msgspec
import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter, Gauge, Histogram

from athenic.orchestrator.conversation_files import ConversationFiles
from athenic.orchestrator.errors import RetryableError, TerminalError, refused_as_too_large
from athenic.orchestrator.events import EventPublisher
from athenic.orchestrator.final_events import FinalEvents
from athenic.orchestrator.job import ExecutionGate, Job
from athenic.orchestrator.planners.base import Answer, Planner
from athenic.orchestrator.policies import PolicyCache
from athenic.orchestrator.records import (
    Outcome,
    RecordStore,
    Stored,
    final_response,
    refused_response,
    stored_size,
)
from athenic.orchestrator.sandbox.base import SandboxBackend
from athenic.orchestrator.settings import OrchestratorSettings
from athenic.orchestrator.turn_order import TurnOrder
from athenic.shared import names
from athenic.shared.broker import Broker
from athenic.shared.conversations import ConversationLog
from athenic.shared.files import FileStore
from athenic.shared.logging import bind_request, get_logger
from athenic.shared.messages import ChatRequest, ChatResponse, Conversation, chat_request_decoder, encode
from athenic.shared.settings import FileSettings, NatsSettings

log = get_logger(__name__)

MESSAGES = Counter("athenic_orchestrator_messages_total", "Messages handled, by outcome", ["outcome"])
IN_FLIGHT = Gauge("athenic_orchestrator_in_flight", "Messages being answered now")
ANSWER_SECONDS = Histogram("athenic_orchestrator_answer_seconds", "Time to answer one message")
WAITING = Gauge("athenic_orchestrator_waiting_turns", "Messages waiting for an earlier message of their conversation")
# Conversations whose latest interrupt this replica remembers (the conversation key keeps it for good).
INTERRUPTS_REMEMBERED = 10_000


async def _guarded(work: Awaitable[None]) -> None:
    """Run one message's work; whatever goes wrong, the loop that runs it lives on."""
    try:
        await work
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        # The broker went away mid-answer (a record write or an ack failed): the message comes
        # back after ack_wait.
        log.warning("answer interrupted by a broker fault; it will be redelivered",
                    error=str(exc) or type(exc).__name__)
    except Exception:
        # A bug must not take a slot down with it: the message is redelivered after ack_wait and
        # fails clearly on its last attempt.
        log.exception("answer failed unexpectedly; it will be redelivered")


def _interrupt_seq(payload: bytes) -> int | None:
    """The ``before`` of an interrupt broadcast; None for a plain cancel (an empty payload)."""
    if not payload:
        return None
    try:
        before = msgspec.json.decode(payload).get("before")
    except (msgspec.DecodeError, AttributeError):
        return None
    return before if isinstance(before, int) else None


def record_budget(configured: int, max_payload: int) -> int:
    """The record budget in force: the setting, at most half the server's max_payload.

    Half, not all: a record holds the user's message besides the answer (a ``processing``
    record holds the newer message with the previous answer), and JetStream adds headers.
    """
    ceiling = max_payload // 2
    if configured <= ceiling:
        return configured
    log.warning("ATHENIC_RECORD_MAX_BYTES is more than half the NATS server's max_payload; using half",
                configured=configured, max_payload=max_payload, record_max_bytes=ceiling)
    return ceiling


def retry_delay(delivered: int) -> float:
    """Back-off before the next delivery: 1, 2, 4 ... 30 s."""
    return float(min(2 ** max(delivered - 1, 0), 30))


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
        file_settings: FileSettings | None = None,
    ) -> None:
        self.settings = settings
        self.file_settings = file_settings or FileSettings()
        self.nats_settings = nats_settings
        self.broker = broker
        self.planner = planner
        self.sandbox = sandbox
        self.policies = policies
        self.gate = gate
        self.log = ConversationLog(broker.bucket(names.CONVERSATIONS_BUCKET), broker.bucket(names.TURNS_BUCKET),
                                   broker.js, keep=nats_settings.athenic_turns_per_conversation)
        self.records = RecordStore(broker.bucket(names.RESPONSES_BUCKET), self.log,
                                   max_bytes=record_budget(settings.athenic_record_max_bytes, broker.nc.max_payload),
                                   on_final=FinalEvents(broker.js).publish)
        self.order = TurnOrder(broker, self.log)
        self.running: dict[str, set[Job]] = defaultdict(set)
        self.waiting: set[asyncio.Task[None]] = set()  # messages waiting for an earlier one of their conversation
        self.due: set[asyncio.Task[None]] = set()  # ... whose turn came
        self.quota_queued: set[asyncio.Task[None]] = set()  # answers that gave their slot back to wait for a quota
        self.due_runs = asyncio.Semaphore(settings.athenic_concurrency)
        self.interrupted: OrderedDict[str, int] = OrderedDict()
        self.alive_at = asyncio.get_running_loop().time()

    async def run(self, stop: asyncio.Event) -> None:
        cancel_sub = await self.broker.nc.subscribe(f"{names.CANCEL_SUBJECT_PREFIX}.*", cb=self._on_cancel)
        slots = [asyncio.create_task(self._slot(i, stop), name=f"slot-{i}")
                 for i in range(self.settings.athenic_concurrency)]
        log.info("orchestrator consuming", concurrency=len(slots), planner=self.planner.name,
                 sandbox=self.sandbox.name)
        try:
            await stop.wait()
            # Messages still waiting for their turn go back to the stream at once, for another
            # replica. Slots finish the fetch they are in (at most the fetch timeout) and the
            # message they hold, as do turns that came due; past the drain period the work is
            # cancelled and redelivered elsewhere.
            for task in list(self.waiting):
                task.cancel()
            working = [*slots, *self.waiting, *self.due, *self.quota_queued]
            _, pending = await asyncio.wait(
                working, timeout=self.settings.athenic_fetch_timeout_seconds + self.settings.athenic_drain_seconds
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*working, return_exceptions=True)
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
                    await self._hold_slot(msg)
        finally:
            if psub is not None:
                # a pull subscription left behind would hold up the connection's drain
                with contextlib.suppress(nats.errors.Error):
                    await psub.unsubscribe()

    async def _hold_slot(self, msg: Msg) -> None:
        """Answer ``msg`` in this slot until it is done, or until its run waits for its tenant's
        quota: then it goes on without the slot, which fetches other work (a tenant flooding its
        quota never holds the slots every other tenant needs)."""
        queued = asyncio.Event()
        task = asyncio.create_task(_guarded(self.handle(msg, on_queued=queued.set)))
        waiting = asyncio.create_task(queued.wait())
        try:
            await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            waiting.cancel()
        if not task.done():
            self.quota_queued.add(task)
            task.add_done_callback(self.quota_queued.discard)

    async def handle(self, msg: Msg, on_queued: Callable[[], None] | None = None) -> None:
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
            turn = await self.order.is_next(request.client_id, seq)
            if turn is None:
                log.info("message already answered; acked without work", seq=seq)
                await msg.ack()
                MESSAGES.labels("duplicate").inc()
                return
            if not turn:
                if request.on_busy == "interrupt":
                    await self._interrupt(request, seq)
                self._wait_for_turn(msg, request, seq, delivered)
                return
            await self._work(msg, request, seq, delivered, on_queued)

    def _wait_for_turn(self, msg: Msg, request: ChatRequest, seq: int, delivered: int) -> None:
        """An earlier message of the conversation comes first: wait for it without holding this slot."""
        task = asyncio.create_task(self._work_when_due(msg, request, seq, delivered), name=f"waiting-{seq}")
        self.waiting.add(task)
        WAITING.inc()

        def done(_: asyncio.Task[None]) -> None:
            if task in self.waiting:
                self.waiting.discard(task)
                WAITING.dec()
            self.due.discard(task)

        task.add_done_callback(done)

    async def _work_when_due(self, msg: Msg, request: ChatRequest, seq: int, delivered: int) -> None:
        with bind_request(request_id=request.request_id, client_id=request.client_id, tenant=request.tenant):
            log.info("waiting for an earlier message of the conversation", seq=seq)
            keepalive = asyncio.create_task(self._keep_alive(msg))
            try:
                due = await self.order.wait_turn(request.client_id, seq)
            except asyncio.CancelledError:  # shutting down: hand it back now, not after ack_wait
                with contextlib.suppress(nats.errors.Error, OSError):
                    await msg.nak()
                raise
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                log.warning("waiting interrupted by a broker fault; it will be redelivered", error=str(exc))
                return
            finally:
                keepalive.cancel()
            task = asyncio.current_task()
            if task in self.waiting:  # from here on it drains like a slot's work
                self.waiting.discard(task)
                self.due.add(task)
                WAITING.dec()
            if not due:
                await _guarded(msg.ack())
                return
            # A bound of its own: these turns were fetched by a slot that moved on.
            async with self.due_runs:
                await _guarded(self._work(msg, request, seq, delivered))

    async def _interrupt(self, request: ChatRequest, seq: int) -> None:
        """``x-on-busy: interrupt``: every earlier turn of the conversation ends ``cancelled``.

        The mark in the conversation key covers turns that have not started (wherever they wait);
        the broadcast stops the running one on whichever replica runs it.
        """
        await self.records.interrupt_before(request.client_id, seq, request)
        await self.broker.nc.publish(names.cancel_subject(request.client_id), encode({"before": seq}))
        log.info("earlier turns interrupted", seq=seq)

    async def _work(self, msg: Msg, request: ChatRequest, seq: int, delivered: int,
                    on_queued: Callable[[], None] | None = None) -> None:
        IN_FLIGHT.inc()
        keepalive = asyncio.create_task(self._keep_alive(msg))
        try:
            with ANSWER_SECONDS.time():
                await self._answer(msg, request, seq, delivered, on_queued)
        except Exception as exc:
            if not refused_as_too_large(exc):
                raise
            # Past the final answer's own handling (a processing record refused...): the same
            # write would be refused on every delivery, so the message ends here.
            log.error("a write of this message was refused as too large; message terminated",
                      seq=seq, error=str(exc) or type(exc).__name__)
            await self._finish(msg, request.client_id, terminate=True)
            MESSAGES.labels("too_large").inc()
        finally:
            keepalive.cancel()
            IN_FLIGHT.dec()

    async def _keep_alive(self, msg: Msg) -> None:
        interval = self.nats_settings.athenic_ack_wait_seconds / 3
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(nats.errors.Error):
                await msg.in_progress()

    async def _answer(self, msg: Msg, request: ChatRequest, seq: int, delivered: int,
                      on_queued: Callable[[], None] | None) -> None:
        client_id = request.client_id
        files = self._conversation_files(request)
        first_run = self.planner.first_run(request, self.sandbox.languages)
        if first_run is not None:  # the run is admitted, and what it needs looked up, while the conversation is read
            self.gate.ahead(request.tenant, request.request_id)
            files.look_ahead()
            self.sandbox.prepare(request.tenant, client_id, first_run)
        try:
            await self._respond(msg, request, seq, delivered, on_queued, files)
        finally:
            await self.gate.settled(request.request_id)  # (an admission made ahead and not used is given back)

    async def _respond(self, msg: Msg, request: ChatRequest, seq: int, delivered: int,
                       on_queued: Callable[[], None] | None, files: ConversationFiles) -> None:
        client_id = request.client_id
        (current, revision), (conversation, conversation_revision) = await asyncio.gather(
            self.records.current(client_id), self.log.conversation(client_id))
        owner = (conversation.owner if conversation is not None else None) or (current.owner if current else None)
        if owner is not None and request.owner != owner:
            log.error("message for a clientId owned by another user terminated")
            await msg.term()
            MESSAGES.labels("foreign").inc()
            await self.order.advanced(client_id)
            return
        stored = await self.records.start(request, seq, (current, revision))
        if stored is None:
            log.info("message already answered; finishing its log entry and acking", seq=seq)
            await self._log_earlier_answer(request)
            await self._finish(msg, client_id, terminate=False)
            MESSAGES.labels("duplicate").inc()
            return
        log.info("answering", seq=seq, delivered=delivered)
        events = EventPublisher(self.broker, client_id, request.request_id)
        job = Job(request, seq, self.settings, self.sandbox, events, self.policies.for_tenant(request.tenant),
                  self.gate, history=lambda limit: self.log.recent(client_id, conversation, limit),
                  on_queued=on_queued, files=files)
        outcome = await self._outcome(job, conversation, delivered)
        if outcome is None:  # retry later
            await msg.nak(delay=retry_delay(delivered))
            MESSAGES.labels("retried").inc()
            return
        response = final_response(request, outcome, job.executions)
        # What the client saw stream stays in the answer; then the budget may cut it and add a
        # note, which is streamed too: before the record, so deltas come first and make its message.
        response = msgspec.structs.replace(response, message=events.settled(response.message))
        response = self.records.fit(request, seq, response)
        await events.conclude(response.message)
        if response.truncated:
            size = stored_size(request, seq, response)
            # over budget still when the user's own message alone is larger: written if NATS takes it
            (log.warning if size > self.records.max_bytes else log.info)(
                "answer cut to the record budget", seq=seq, size=size, budget=self.records.max_bytes,
                dropped=response.dropped)
        refused = (await self._store_final(request, seq, response, stored,
                                           (conversation, conversation_revision))).status != response.status
        status = "failed" if refused else outcome.status
        await events.phase(status)
        await self.gate.settled(request.request_id)  # the run's quota slot is given back before the next message
        await self._finish(msg, client_id, terminate=status == "failed" and (outcome.message is None or refused))
        MESSAGES.labels(status).inc()
        log.info("answered", seq=seq, status=status, executions=len(job.executions))

    def _conversation_files(self, request: ChatRequest) -> ConversationFiles:
        store = FileStore(self.broker.object_store(names.FILES_BUCKET), self.broker.bucket(names.FILE_INDEX_BUCKET),
                          self.broker.js)
        return ConversationFiles(store, self.file_settings, request.client_id, request.request_id)

    async def _store_final(self, request: ChatRequest, seq: int, response: ChatResponse, stored: Stored,
                           conversation: tuple[Conversation | None, int] | None = None) -> ChatResponse:
        """Write the final record and the turn; an answer NATS refuses for its size becomes a
        terminal ``failed`` one saying why (never a retry: it would be refused again)."""
        size = stored_size(request, seq, response)
        try:
            written = await self.records.finish(request, seq, response, stored)
        except Exception as exc:
            if not refused_as_too_large(exc):
                raise
            log.error("NATS refused the answer as too large; answering failed instead", seq=seq, size=size,
                      budget=self.records.max_bytes, error=str(exc) or type(exc).__name__)
            response = refused_response(response, size, self.records.max_bytes)
            written = await self.records.finish(request, seq, response, None)
        if not written:
            log.warning("another delivery's final answer to this message stands; this one is dropped", seq=seq)
            await self._log_earlier_answer(request)
            return response
        try:
            await self.records.append_turn(request, response, conversation)
        except Exception as exc:
            if not refused_as_too_large(exc):
                raise
            # The record stands; the log keeps the failure rather than nothing.
            log.error("NATS refused the turn as too large; logged as failed", seq=seq, size=size,
                      error=str(exc) or type(exc).__name__)
            await self.records.append_turn(request, refused_response(response, size, self.records.max_bytes))
        return response

    async def _log_earlier_answer(self, request: ChatRequest) -> None:
        """An earlier delivery answered this message; make sure its turn is in the log."""
        current, _ = await self.records.current(request.client_id)
        if current is not None and current.request_id == request.request_id and current.last_response is not None:
            await self.records.append_turn(request, current.last_response)
            if self.records.on_final is not None:  # its finished-turn event too (deduplicated by request id)
                await self.records.on_final(request, current.last_response)

    async def _finish(self, msg: Msg, client_id: str, *, terminate: bool) -> None:
        """Remove the message from the stream (acknowledged by the server), then wake the next one."""
        if terminate:
            await msg.term()
        else:
            await msg.ack_sync()
        await self.order.advanced(client_id)

    async def _outcome(self, job: Job, conversation: Conversation | None, delivered: int) -> Outcome | None:
        cutoff = max(conversation.cancel_before if conversation is not None else 0,
                     self.interrupted.get(job.request.client_id, 0))
        if job.seq < cutoff:
            return Outcome("cancelled", message="Cancelled: a newer message interrupted this one.",
                           error="interrupted by a newer message")
        limit = self.nats_settings.athenic_max_deliver
        if delivered > limit:  # the last allowed attempt died mid-way (a crash): do not run it again
            return Outcome("failed", error=f"gave up after {limit} attempts")
        return await self._run(job, delivered)

    async def _run(self, job: Job, delivered: int) -> Outcome | None:
        """Plan and run; ``None`` means a retryable fault with deliveries left."""
        client_id = job.request.client_id
        task: asyncio.Task[Answer] = asyncio.create_task(self.planner.answer(job.request, job))
        job.task = task
        self.running[client_id].add(job)
        if job.seq < self.interrupted.get(client_id, 0):
            job.cancel("interrupted by a newer message")  # the interrupt came before the job was listed
        try:
            answer = await task
            if job.cancelled_because is not None:
                # cancelled, but the cancel was dropped on the way (Python 3.11's wait_for, under
                # nats-py's requests, can return a reply that lands with it): still cancelled
                return Outcome("cancelled", error=job.cancelled_because)
            return Outcome("completed", message=answer.message, requires_e2b=answer.requires_e2b)
        except asyncio.CancelledError:
            if job.cancelled_because is None:
                task.cancel()
                raise
            return Outcome("cancelled", error=job.cancelled_because)
        except TerminalError as exc:
            log.error("answer failed", error=str(exc))
            return Outcome("failed", error=str(exc))
        except Exception as exc:  # RetryableError, or a bug that may be transient
            if refused_as_too_large(exc):  # NATS refused something for its size: it would again
                log.error("answer failed: NATS refused a write as too large", error=str(exc) or type(exc).__name__)
                return Outcome("failed", error=f"a write NATS refused as too large: {str(exc) or type(exc).__name__}")
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

    async def _on_cancel(self, msg: Msg) -> None:
        client_id = names.client_id_of_subject(msg.subject)
        before = _interrupt_seq(msg.data)
        if before is None:  # DELETE /api/chat/{clientId}/run
            reason, jobs = "cancelled at the user's request", list(self.running.get(client_id, ()))
        else:  # a newer message interrupts every earlier turn, here and wherever they run
            self.interrupted[client_id] = max(before, self.interrupted.pop(client_id, 0))
            while len(self.interrupted) > INTERRUPTS_REMEMBERED:
                self.interrupted.popitem(last=False)
            reason = "interrupted by a newer message"
            jobs = [job for job in self.running.get(client_id, ()) if job.seq < before]
        cancelled = sum(job.cancel(reason) for job in jobs)
        if cancelled and msg.reply:
            await msg.respond(encode({"cancelled": cancelled}))
        if cancelled:
            log.info("run cancelled", client_id=client_id, jobs=cancelled)

