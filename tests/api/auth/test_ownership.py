"""The user who creates a clientId owns it: another user reading, streaming or posting gets 404."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import nats
import pytest
import websockets

from athenic.shared import names
from athenic.shared.conversations import ConversationLog
from tests.api.auth.tokens import RATE_BURST, RATE_PER_MINUTE, Tokens, bearer
from tests.support.jwks import JwksServer
from tests.support.nats import NatsServer
from tests.support.push_client import Records, close_code, open_socket, recv, recv_type, ws_url
from tests.support.services import Api

pytestmark = pytest.mark.integration


async def _last_request_seq(nats_url: str, client_id: str) -> int | None:
    nc = await nats.connect(nats_url)
    try:
        msg = await nc.jetstream().get_last_msg(names.REQUEST_STREAM, names.request_subject(client_id))
        return msg.seq
    except nats.js.errors.NotFoundError:
        return None
    finally:
        await nc.close()


async def test_another_user_learns_nothing_and_touches_nothing(api: Api, tokens: Tokens,
                                                               system_nats: NatsServer) -> None:
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    alice_token, bob_token = tokens.hs256(alice), tokens.rs256(bob)
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as http, Records(system_nats.url) as records:
        posted = await http.post("/api/chat", json={"message": "alice's secret"}, headers=bearer(alice_token))
        client_id = posted.json()["clientId"]
        # the orchestrator answered: the record names alice as owner
        revision = await records.put(client_id, "completed", owner=alice, message="alice's secret")
        seq = await _last_request_seq(system_nats.url, client_id)
        unknown = str(uuid.uuid4())

        for target in (client_id, unknown):  # the same answer as for a clientId that does not exist
            got = await http.get(f"/api/chat/response/{target}", headers=bearer(bob_token))
            assert got.status_code == 404 and got.json()["detail"] == f"no conversation {target}"
            streamed = await http.get(f"/api/chat/stream/{target}", headers=bearer(bob_token))
            assert streamed.status_code == 404 and streamed.json()["detail"] == f"no conversation {target}"
        # a socket may wait on an unused id (it can start the conversation), never on alice's
        async with open_socket(api.url, client_id, token=bob_token) as ws:
            assert await close_code(ws) == (4404, f"no conversation {client_id}")
        assert (await http.delete(f"/api/chat/{client_id}/run", headers=bearer(bob_token))).status_code == 404
        refused = await http.post("/api/chat", json={"message": "bob overwrites"},
                                  headers={**bearer(bob_token), "x-client-id": client_id})
        assert refused.status_code == 404 and refused.json()["detail"] == f"no conversation {client_id}"
        async with websockets.connect(ws_url(api.url, client_id)) as ws:  # first-frame auth too
            await ws.send(json.dumps({"type": "auth", "token": bob_token}))
            assert (await close_code(ws))[0] == 4404

        # alice's conversation is as she left it: no new message, the same record
        assert await _last_request_seq(system_nats.url, client_id) == seq
        assert await records.revision(client_id) == revision
        mine = (await http.get(f"/api/chat/response/{client_id}", headers=bearer(alice_token))).json()
        assert mine["lastMessage"] == "alice's secret" and mine["revision"] == revision
        more = await http.post("/api/chat", json={"message": "alice again"},
                               headers={**bearer(alice_token), "x-client-id": client_id})
        assert more.status_code == 200


async def test_posting_to_a_pending_conversation_of_another_user_is_404(api: Api, tokens: Tokens,
                                                                        system_nats: NatsServer) -> None:
    alice, bob = tokens.es256(str(uuid.uuid4())), tokens.hs256(str(uuid.uuid4()))
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
        client_id = (await http.post("/api/chat", json={"message": "waiting"}, headers=bearer(alice))).json()[
            "clientId"]
        seq = await _last_request_seq(system_nats.url, client_id)
        refused = await http.post("/api/chat", json={"message": "me too"},
                                  headers={**bearer(bob), "x-client-id": client_id})
        assert refused.status_code == 404
        assert await _last_request_seq(system_nats.url, client_id) == seq
        # a fresh clientId of bob's own choosing is his
        mine = await http.post("/api/chat", json={"message": "mine"},
                               headers={**bearer(bob), "x-client-id": f"bob-{uuid.uuid4().hex}"})
        assert mine.status_code == 200


async def test_a_socket_stops_at_a_record_of_another_owner(api: Api, tokens: Tokens, system_nats: NatsServer) -> None:
    # e.g. the record expired (TTL) and another user took the clientId: the old socket learns nothing of it
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    client_id = f"taken-{uuid.uuid4().hex}"
    async with Records(system_nats.url) as records:
        await records.put(client_id, "completed", owner=alice)
        async with open_socket(api.url, client_id, token=tokens.hs256(alice)) as ws:
            await recv(ws)
            await records.put(client_id, "processing", seq=9, owner=bob, message="bob's")
            code, reason = await close_code(ws)
            assert code == 4404 and "bob" not in reason


async def test_posting_is_rate_limited_per_user(api: Api, tokens: Tokens) -> None:
    limited, other = tokens.hs256(str(uuid.uuid4())), tokens.hs256(str(uuid.uuid4()))
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
        codes = [(await http.post("/api/chat", json={"message": "hi"}, headers=bearer(limited))).status_code
                 for _ in range(RATE_BURST)]
        assert codes == [200] * RATE_BURST
        over = await http.post("/api/chat", json={"message": "hi"}, headers=bearer(limited))
        assert over.status_code == 429
        assert over.headers["content-type"].startswith("application/problem+json")
        retry_after = int(over.headers["retry-after"])
        assert 1 <= retry_after <= 60 / RATE_PER_MINUTE
        assert (await http.post("/api/chat", json={"message": "hi"}, headers=bearer(other))).status_code == 200
        # chat frames on the socket count against the same budget
        client_id = (await http.post("/api/chat", json={"message": "hi"}, headers=bearer(other))).json()["clientId"]
    async with open_socket(api.url, client_id, token=limited) as ws:
        assert (await close_code(ws))[0] == 4404  # not limited's conversation
    async with open_socket(api.url, client_id, token=other) as ws:
        await recv(ws)
        await ws.send(json.dumps({"type": "chat", "message": "one"}))
        await recv_type(ws, "accepted")
        await ws.send(json.dumps({"type": "chat", "message": "two"}))
        error = await recv_type(ws, "error")
        assert error["status"] == 429 and error["retryAfter"] >= 1


async def test_two_users_racing_the_first_message_to_a_fresh_id_leave_one_owner(
    system_nats: NatsServer, module_tmp: Path, jwks_server: JwksServer, tokens: Tokens, api: Api
) -> None:
    """50 rounds on an api without a rate limit: exactly one wins, the other's message is never stored."""
    env = {key: value for key, value in api.env.items() if key.startswith(("ATHENIC_", "SUPABASE_"))}
    other = Api(system_nats.url, module_tmp, **{**env, "ATHENIC_RATE_LIMIT_PER_MINUTE": "0"}).start()
    users = {name: str(uuid.uuid4()) for name in ("alice", "bob")}
    headers = {name: bearer(tokens.hs256(user)) for name, user in users.items()}
    nc = await nats.connect(system_nats.url)
    log = ConversationLog(await nc.jetstream().key_value(names.CONVERSATIONS_BUCKET),
                          await nc.jetstream().key_value(names.TURNS_BUCKET), nc.jetstream(), keep=1000)
    try:
        async with httpx.AsyncClient(base_url=other.url, timeout=10) as http:
            wins = {"alice": 0, "bob": 0}
            for _ in range(50):
                client_id = f"race-{uuid.uuid4().hex}"
                answers = await asyncio.gather(*(
                    http.post("/api/chat", json={"message": f"{name} first"},
                                         headers={**headers[name], "x-client-id": client_id})
                    for name in ("alice", "bob")))
                codes = sorted(a.status_code for a in answers)
                assert codes == [200, 404], [a.text for a in answers]
                winner = "alice" if answers[0].status_code == 200 else "bob"
                wins[winner] += 1
                stored = await log.waiting(client_id, 10)
                assert [w.request.owner for w in stored] == [users[winner]]  # the loser's was never stored
                conversation, _ = await log.conversation(client_id)
                assert conversation is not None and conversation.owner == users[winner]
        assert sum(wins.values()) == 50
    finally:
        await nc.close()
        other.terminate()
