"""Conversation files belong to the conversation's owner: another user gets 404 on every file route."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.api.auth.tokens import Tokens, bearer
from tests.support.services import Api

pytestmark = pytest.mark.integration


async def test_another_users_files_are_404(api: Api, tokens: Tokens) -> None:
    alice, bob = bearer(tokens.hs256(str(uuid.uuid4()))), bearer(tokens.hs256(str(uuid.uuid4())))
    client_id = str(uuid.uuid4())
    route = f"/api/chat/{client_id}/files"
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
        assert (await http.post(route, params={"name": "a.csv"}, content=b"1,2")).status_code == 401
        # the upload claims the unused clientId for alice
        first = await http.post(route, params={"name": "a.csv"}, content=b"1,2", headers=alice)
        assert first.status_code == 201, first.text
        assert (await http.get(route, headers=alice)).status_code == 200
        assert (await http.get(f"{route}/a.csv", headers=alice)).content == b"1,2"
        assert (await http.get(route, headers=bob)).status_code == 404
        assert (await http.get(f"{route}/a.csv", headers=bob)).status_code == 404
        theirs = await http.post(route, params={"name": "b.csv"}, content=b"x", headers=bob)
        assert theirs.status_code == 404
        assert [f["name"] for f in (await http.get(route, headers=alice)).json()["files"]] == ["a.csv"]
        # alice's messages to it are hers; bob's are refused as for any conversation of another user
        assert (await http.post("/api/chat", json={"message": "hi"},
                                headers={**alice, "x-client-id": client_id})).status_code == 200
        assert (await http.post("/api/chat", json={"message": "hi"},
                                headers={**bob, "x-client-id": client_id})).status_code == 404
