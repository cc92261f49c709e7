"""Conversation files for the routes: who may touch them, the limits, the Object Store calls.

Ownership is the conversation's (``ownership.py``): an upload to an unused clientId claims it
as a first message does, so a conversation can start with its data; another user's
conversation is 404 for every file route. Reading needs the conversation to exist (its key,
or files of it): an unknown clientId is 404 like everywhere else.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from athenic.api.chat_service import BROKER_FAULTS, ChatService, check_client_id
from athenic.api.errors import BrokerUnavailable, InvalidRequest, NotFound, PayloadTooLarge
from athenic.api.identity import Identity
from athenic.api.ratelimit import RateLimiter
from athenic.api.uploads import Upload
from athenic.shared import names
from athenic.shared.files import BadFileName, FileInfo, FileStore, check_name, content_type_of
from athenic.shared.logging import get_logger
from athenic.shared.settings import FileSettings

log = get_logger(__name__)

UNAVAILABLE = "the message broker is unavailable; retry later"


def mib(count: int) -> str:
    return f"{count / (1024 * 1024):.1f} MiB"


def valid_name(name: str | None) -> str:
    if name is None:
        raise InvalidRequest("the file needs a name: `?name=` for a raw body, or the form part's filename")
    try:
        return check_name(name)
    except BadFileName as exc:
        raise InvalidRequest(str(exc)) from None


@dataclass(frozen=True, slots=True)
class UserFiles:
    """The file routes' one dependency: the service and who calls it."""

    service: FileService
    identity: Identity


class FileService:
    def __init__(self, chat: ChatService, limits: FileSettings) -> None:
        self.chat = chat
        self.limits = limits
        settings = chat.settings
        # uploads have their own bucket of the posting rate: a file does not cost a message
        self.limiter = RateLimiter(settings.athenic_rate_limit_per_minute, settings.athenic_rate_limit_burst)

    @property
    def store(self) -> FileStore:
        broker = self.chat.broker
        return FileStore(broker.object_store(names.FILES_BUCKET), broker.bucket(names.FILE_INDEX_BUCKET),
                         broker.js)

    def admit(self, client_id: str, who: Identity, declared_length: int | None) -> None:
        """Checks before the body is read: the clientId, the rate, a declared length over the limit."""
        check_client_id(client_id, "clientId")
        self.chat.check_connected()
        if declared_length is not None and declared_length > self.limits.athenic_file_max_bytes + 64 * 1024:
            raise PayloadTooLarge(f"the body is {declared_length} bytes; a file may have at most "
                                  f"{self.limits.athenic_file_max_bytes} bytes",
                                  limit=self.limits.athenic_file_max_bytes)
        self.limiter.admit(who.rate_key)

    async def claim(self, client_id: str, who: Identity) -> None:
        try:
            await self.chat.ownership.claim(client_id, who)
        except BROKER_FAULTS as exc:
            raise BrokerUnavailable(UNAVAILABLE, headers={"Retry-After": "1"}) from exc

    async def store_upload(self, client_id: str, name: str, upload: Upload) -> FileInfo:
        """Keep the upload (replacing a file of that name) if the conversation's limits allow it."""
        try:
            present = await self.store.list(client_id)
            others = [item for item in present if item.name != name]
            total = sum(item.size for item in others) + upload.size
            if total > self.limits.athenic_conversation_files_max_bytes:
                raise PayloadTooLarge(
                    f"the conversation's files would take {mib(total)}; the limit is "
                    f"{mib(self.limits.athenic_conversation_files_max_bytes)} per conversation",
                    limit=self.limits.athenic_conversation_files_max_bytes)
            if len(others) + 1 > self.limits.athenic_conversation_max_files:
                raise PayloadTooLarge(
                    f"the conversation has {len(others)} files; the limit is "
                    f"{self.limits.athenic_conversation_max_files}", limit=self.limits.athenic_conversation_max_files)
            stored = await self.store.put(client_id, name, upload.body, content_type_of(name, upload.content_type))
        except BROKER_FAULTS as exc:
            raise BrokerUnavailable(UNAVAILABLE, headers={"Retry-After": "1"}) from exc
        log.info("file stored", client_id=client_id, bytes=stored.size, content_type=stored.content_type)
        return stored

    async def list(self, client_id: str, who: Identity) -> list[FileInfo]:
        check_client_id(client_id, "clientId")
        self.chat.check_connected()
        try:
            (conversation, _), found = await asyncio.gather(
                self.chat.log.conversation(client_id), self.store.list(client_id))
        except BROKER_FAULTS as exc:
            raise BrokerUnavailable(UNAVAILABLE, headers={"Retry-After": "1"}) from exc
        if conversation is None and not found:
            raise NotFound(f"no conversation {client_id}")
        if conversation is not None and not who.may_access(conversation.owner):
            raise NotFound(f"no conversation {client_id}")
        return found

    async def read(self, client_id: str, name: str, who: Identity) -> tuple[FileInfo, bytes]:
        check_client_id(client_id, "clientId")
        name = valid_name(name)
        self.chat.check_connected()
        try:
            (conversation, _), found = await asyncio.gather(
                self.chat.log.conversation(client_id), self.store.read(client_id, name))
        except BROKER_FAULTS as exc:
            raise BrokerUnavailable(UNAVAILABLE, headers={"Retry-After": "1"}) from exc
        if conversation is not None and not who.may_access(conversation.owner):
            raise NotFound(f"no conversation {client_id}")
        if found is None:
            raise NotFound(f"no file {name!r} in conversation {client_id}")
        return found
