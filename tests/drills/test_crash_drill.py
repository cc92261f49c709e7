"""2,000 messages accepted while the orchestrator is SIGKILLed twice and nats-server restarted once.

What a user would notice: an accepted message (a 200) that never gets its answer, or gets
another message's answer. The api may answer 503 while the broker is down: those messages
were not accepted (the user retries) and are not counted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.load import Load, allow_executions, read_answers
from tests.support.nats import NatsServer
from tests.support.services import Api, Orchestrator

pytestmark = pytest.mark.drill

MESSAGES = 2000
CODE_EVERY = 20  # one message in 20 runs code in the local sandbox


def message_for(index: int) -> str:
    if index % CODE_EVERY == 0:
        return f"```python\nprint({index} * 2)\n```"
    return f"hello number {index}"


def start_orchestrator(nats: NatsServer, tmp_path: Path) -> Orchestrator:
    # ack_wait at its minimum so work held by a killed replica comes back within seconds
    return Orchestrator(nats.url, tmp_path, ATHENIC_CONCURRENCY="8", ATHENIC_ACK_WAIT_SECONDS="5").start()


@pytest.mark.slow
def test_two_orchestrator_kills_and_a_broker_restart_lose_no_accepted_message(tmp_path: Path) -> None:
    nats = NatsServer(tmp_path / "jetstream").start()
    api = Api(nats.url, tmp_path, LOG_LEVEL="WARNING", ATHENIC_RATE_LIMIT_PER_MINUTE="0").start()
    allow_executions([nats.url])
    orchestrators = [start_orchestrator(nats, tmp_path)]
    try:
        load = Load(api.url, MESSAGES, message_for).start()

        load.wait_for(400)
        orchestrators[-1].kill()
        orchestrators.append(start_orchestrator(nats, tmp_path))

        load.wait_for(900)
        nats.kill()
        nats.start()

        load.wait_for(1500)
        orchestrators[-1].kill()
        orchestrators.append(start_orchestrator(nats, tmp_path))

        load.join()
        print(load.summary())
        assert not load.unexpected, load.unexpected[:5]
        assert len(load.accepted) == MESSAGES
        assert len({item.request_id for item in load.accepted}) == MESSAGES

        answers = read_answers(api.url, load.accepted, timeout=150)
        missing = [item for item in load.accepted if item.request_id not in answers]
        assert not missing, f"{len(missing)} accepted messages never answered, e.g. {missing[:3]}"
        assert len(answers) == MESSAGES
        for item in load.accepted:
            state = answers[item.request_id]
            assert state["lastMessage"] == item.message
            assert state["status"] == "completed", state
            if item.index % CODE_EVERY == 0:
                assert state["lastResponse"]["executions"][0]["stdout"] == f"{item.index * 2}\n"
    finally:
        for orchestrator in orchestrators:
            orchestrator.kill()
        api.terminate()
        nats.stop()
