"""Conversation file routes over real HTTP against a real api process and nats-server."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import nats
import pytest

from athenic.shared import names
from tests.support.nats import NatsServer
from tests.support.services import Api

pytestmark = pytest.mark.integration

FILE_LIMIT = 64 * 1024
CONVERSATION_LIMIT = 160 * 1024


@pytest.fixture(scope="module")
def api(system_nats: NatsServer, module_tmp: Path) -> Iterator[Api]:
    service = Api(system_nats.url, module_tmp, ATHENIC_FILE_MAX_BYTES=str(FILE_LIMIT),
                  ATHENIC_CONVERSATION_FILES_MAX_BYTES=str(CONVERSATION_LIMIT),
                  ATHENIC_CONVERSATION_MAX_FILES="5").start()
    try:
        yield service
    finally:
        service.terminate()


def files_url(client_id: str) -> str:
    return f"/api/chat/{client_id}/files"


def test_multipart_and_raw_uploads_are_listed_and_downloaded_with_their_headers(client: httpx.Client) -> None:
    client_id = str(uuid.uuid4())
    csv = b"x,y\n1,2\n3,4\n"
    posted = client.post(files_url(client_id), files={"file": ("data.csv", csv, "text/csv")})
    assert posted.status_code == 201, posted.text
    body = posted.json()
    assert body == {"name": "data.csv", "size": len(csv), "sha256": hashlib.sha256(csv).hexdigest(),
                    "contentType": "text/csv", "url": f"/api/chat/{client_id}/files/data.csv",
                    "modifiedAt": body["modifiedAt"]}
    png = os.urandom(3000)
    raw = client.post(files_url(client_id), params={"name": "plot ü.png"}, content=png,
                      headers={"Content-Type": "application/octet-stream"})
    assert raw.status_code == 201, raw.text
    assert raw.json()["contentType"] == "image/png"  # guessed from the name
    assert raw.json()["url"] == f"/api/chat/{client_id}/files/{quote('plot ü.png', safe='')}"

    listed = client.get(files_url(client_id))
    assert listed.status_code == 200
    assert [(f["name"], f["size"]) for f in listed.json()["files"]] == [("data.csv", len(csv)),
                                                                       ("plot ü.png", len(png))]

    got = client.get(raw.json()["url"])
    assert got.status_code == 200
    assert got.content == png
    assert got.headers["content-type"] == "image/png"
    assert got.headers["content-disposition"] == "inline; filename=\"plot _.png\"; filename*=UTF-8''plot%20%C3%BC.png"
    assert got.headers["etag"] == f'"{hashlib.sha256(png).hexdigest()}"'
    assert got.headers["x-content-type-options"] == "nosniff"
    text = client.get(body["url"])
    assert text.content == csv
    assert text.headers["content-type"].startswith("text/csv")
    assert text.headers["content-disposition"].startswith('attachment; filename="data.csv"')


def test_a_file_of_the_same_name_is_replaced(client: httpx.Client) -> None:
    client_id = str(uuid.uuid4())
    for content in (b"first", b"second version"):
        assert client.post(files_url(client_id), params={"name": "a.txt"}, content=content).status_code == 201
    assert [f["size"] for f in client.get(files_url(client_id)).json()["files"]] == [len(b"second version")]
    assert client.get(f"{files_url(client_id)}/a.txt").content == b"second version"


@pytest.mark.parametrize("name", ["", "a/b", "..", ".", "out", "a\\b", "x\ny", "tab\there", "n" * 256, " lead"])
def test_bad_names_are_400(client: httpx.Client, name: str) -> None:
    client_id = str(uuid.uuid4())
    answer = client.post(files_url(client_id), params={"name": name}, content=b"data")
    assert answer.status_code == 400, (name, answer.text)
    assert answer.headers["content-type"] == "application/problem+json"
    assert client.get(files_url(client_id)).status_code == 404  # nothing was stored


def test_a_form_filename_with_a_path_is_400_and_a_raw_body_needs_a_name(client: httpx.Client) -> None:
    client_id = str(uuid.uuid4())
    assert client.post(files_url(client_id), files={"file": ("../../etc/passwd", b"x")}).status_code == 400
    nameless = client.post(files_url(client_id), content=b"x")
    assert nameless.status_code == 400
    assert "name" in nameless.json()["detail"]
    assert client.post(files_url(client_id), files={"other": ("a.txt", b"x")}).status_code == 400


def test_limits_per_file_and_per_conversation_are_413(client: httpx.Client) -> None:
    client_id = str(uuid.uuid4())
    over = client.post(files_url(client_id), params={"name": "big.bin"}, content=os.urandom(FILE_LIMIT + 1))
    assert over.status_code == 413, over.text
    assert over.headers["content-type"] == "application/problem+json"
    form = client.post(files_url(client_id), files={"file": ("big.bin", os.urandom(FILE_LIMIT + 1))})
    assert form.status_code == 413, form.text

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while the body streams
        for _ in range(40):
            yield os.urandom(8 * 1024)

    streamed = client.post(files_url(client_id), params={"name": "stream.bin"}, content=chunks())
    assert streamed.status_code == 413
    assert client.get(files_url(client_id)).status_code == 404  # none of them was kept

    for index in range(2):
        assert client.post(files_url(client_id), params={"name": f"{index}.bin"},
                           content=os.urandom(FILE_LIMIT)).status_code == 201
    third = client.post(files_url(client_id), params={"name": "2.bin"}, content=os.urandom(FILE_LIMIT))
    assert third.status_code == 413  # 192 KiB > 160 KiB per conversation
    assert "per conversation" in third.json()["detail"]
    # replacing a file counts its new size only
    assert client.post(files_url(client_id), params={"name": "1.bin"},
                       content=os.urandom(FILE_LIMIT)).status_code == 201
    for index in range(3):
        assert client.post(files_url(client_id), params={"name": f"small{index}"}, content=b"s").status_code == 201
    sixth = client.post(files_url(client_id), params={"name": "small3"}, content=b"s")
    assert sixth.status_code == 413  # five files at most
    assert len(client.get(files_url(client_id)).json()["files"]) == 5


def test_unknown_conversation_and_file_are_404(client: httpx.Client) -> None:
    client_id = str(uuid.uuid4())
    assert client.get(files_url(client_id)).status_code == 404
    assert client.get(f"{files_url(client_id)}/nothing.txt").status_code == 404
    assert client.post(files_url(client_id), params={"name": "a"}, content=b"a").status_code == 201
    assert client.get(f"{files_url(client_id)}/nothing.txt").status_code == 404
    assert client.get("/api/chat/bad.id/files").status_code == 400


async def test_files_live_in_the_object_store_with_the_conversation_retention(api: Api, system_nats: NatsServer,
                                                                             client: httpx.Client) -> None:
    client_id = str(uuid.uuid4())
    assert client.post(files_url(client_id), params={"name": "kept.txt"}, content=b"bytes").status_code == 201
    nc = await nats.connect(system_nats.url)
    try:
        js = nc.jetstream()
        store = await js.object_store(names.FILES_BUCKET)
        found = await store.get(f"{client_id}/kept.txt")
        assert found.data == b"bytes"
        info = await js.stream_info(f"OBJ_{names.FILES_BUCKET}")
        assert info.config.max_age == 30 * 24 * 3600  # ATHENIC_TURN_MAX_AGE_SECONDS' default
        assert info.config.num_replicas == 1
    finally:
        await nc.close()


def test_openapi_lists_the_file_routes(client: httpx.Client) -> None:
    document = client.get("/schema/openapi.json").json()
    paths = document["paths"]
    files = paths["/api/chat/{client_id}/files"]
    assert set(files) >= {"post", "get"}
    upload = files["post"]
    assert set(upload["requestBody"]["content"]) == {"multipart/form-data", "application/octet-stream"}
    assert {"201", "400", "404", "413"} <= set(upload["responses"])
    assert upload["responses"]["413"]["content"].keys() == {"application/problem+json"}
    download = paths["/api/chat/{client_id}/files/{name}"]["get"]
    assert {"200", "404"} <= set(download["responses"])


@pytest.mark.parametrize("name", ["a #%?&+.txt", "naïve résumé.pdf", "quote\"and'apostrophe.txt", "日本語.csv"])
def test_any_valid_name_round_trips_through_its_url(client: httpx.Client, name: str) -> None:
    client_id = str(uuid.uuid4())
    posted = client.post(files_url(client_id), params={"name": name}, content=b"payload")
    assert posted.status_code == 201, posted.text
    assert posted.json()["name"] == name
    got = client.get(posted.json()["url"])
    assert got.status_code == 200 and got.content == b"payload"
    disposition = got.headers["content-disposition"]
    assert disposition.endswith(f"filename*=UTF-8''{quote(name, safe='')}")
    fallback = disposition.split('filename="', 1)[1].split('"', 1)[0]
    assert fallback.isascii() and '"' not in fallback and "\\" not in fallback
