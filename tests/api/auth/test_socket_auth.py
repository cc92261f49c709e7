"""Tokens on the WebSocket (header or first frame) and on the SSE stream; bad ones close with 4401."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
import websockets

from tests.api.auth.tokens import Tokens, bearer
from tests.support.push_client import close_code, next_sse, open_socket, recv, recv_type, sse_events, ws_url
from tests.support.services import Api

pytestmark = pytest.mark.integration


async def _conversation(api: Api, token: str) -> str:
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(token)) as http:
        response = await http.post("/api/chat", json={"message": "mine"})
        assert response.status_code == 200, response.text
        return str(response.json()["clientId"])


async def test_a_token_in_the_header_or_in_the_first_frame_opens_the_socket(api: Api, tokens: Tokens) -> None:
    token = tokens.es256(str(uuid.uuid4()))
    client_id = await _conversation(api, token)
    async with open_socket(api.url, client_id, token=token) as ws:
        assert (await recv(ws))["lastMessage"] == "mine"
    # browsers cannot set headers: the token comes first over the socket
    async with websockets.connect(ws_url(api.url, client_id)) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        frame = await recv(ws)
        assert frame["type"] == "response" and frame["lastMessage"] == "mine"
        await ws.send(json.dumps({"type": "chat", "message": "and another"}))
        assert (await recv_type(ws, "accepted"))["clientId"] == client_id


async def test_bad_or_missing_tokens_close_the_socket_with_4401(api: Api, tokens: Tokens) -> None:
    someone = str(uuid.uuid4())
    client_id = await _conversation(api, tokens.hs256(someone))
    expired = tokens.hs256(someone, expires_in=-5)
    async with open_socket(api.url, client_id, token=expired) as ws:
        code, reason = await close_code(ws)
        assert code == 4401 and "expired" in reason
    async with websockets.connect(ws_url(api.url, client_id)) as ws:
        await ws.send(json.dumps({"type": "auth", "token": tokens.hs256(someone, aud="anon")}))
        code, reason = await close_code(ws)
        assert code == 4401 and "audience" in reason
    async with websockets.connect(ws_url(api.url, client_id)) as ws:
        await ws.send(json.dumps({"type": "chat", "message": "no auth first"}))
        assert (await close_code(ws))[0] == 4401
    async with websockets.connect(ws_url(api.url, client_id)) as ws:  # silent: the auth timeout (1 s here)
        assert (await close_code(ws))[0] == 4401


async def test_the_socket_closes_when_its_token_expires_unless_refreshed(api: Api, tokens: Tokens) -> None:
    someone = str(uuid.uuid4())
    client_id = await _conversation(api, tokens.hs256(someone))
    short = tokens.hs256(someone, expires_in=2)
    async with open_socket(api.url, client_id, token=short) as lapsing, \
            open_socket(api.url, client_id, token=short) as refreshed:
        await recv(lapsing)
        await recv(refreshed)
        await refreshed.send(json.dumps({"type": "auth", "token": tokens.hs256(someone, expires_in=600)}))
        code, reason = await close_code(lapsing, timeout=6)
        assert code == 4401 and "expired" in reason
        await refreshed.send(json.dumps({"type": "ping"}))
        assert (await recv_type(refreshed, "pong"))["type"] == "pong"
        # a token of another user is not a refresh
        await refreshed.send(json.dumps({"type": "auth", "token": tokens.hs256(str(uuid.uuid4()))}))
        assert (await close_code(refreshed))[0] == 4401


async def test_the_sse_stream_takes_the_bearer_header(api: Api, tokens: Tokens) -> None:
    token = tokens.rs256(str(uuid.uuid4()))
    client_id = await _conversation(api, token)
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as http, \
            http.stream("GET", f"/api/chat/stream/{client_id}", headers=bearer(token)) as response:
        assert response.status_code == 200
        async with asyncio.timeout(5):
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    assert json.loads(line[5:])["lastMessage"] == "mine"
                    break


async def test_the_sse_stream_ends_when_its_token_expires(api: Api, tokens: Tokens) -> None:
    someone = str(uuid.uuid4())
    client_id = await _conversation(api, tokens.hs256(someone))
    short = tokens.hs256(someone, expires_in=2)
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as http, \
            http.stream("GET", f"/api/chat/stream/{client_id}", headers=bearer(short)) as response:
        assert response.status_code == 200
        events = sse_events(response)
        assert json.loads((await next_sse(events, "response"))["data"])["lastMessage"] == "mine"
        ended = json.loads((await next_sse(events, "error", timeout=8))["data"])
        assert ended["status"] == 401 and "expired" in ended["detail"]
        async with asyncio.timeout(5):  # and the stream is over: nothing more comes
            rest = [event async for event in events]
        assert rest == [], rest
