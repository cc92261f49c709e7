"""Reading a streamed chat completion: text as it comes, tool calls assembled from their fragments.

A streamed reply is a series of ``chat.completion.chunk`` objects: ``delta.content`` (and
``delta.refusal``) pieces of text, ``delta.tool_calls`` fragments keyed by ``index`` (the id and
function name usually in the first, the arguments spread over many), ``finish_reason`` on the
last choice chunk, and — with ``stream_options.include_usage`` — a final chunk with no choices
that carries ``usage``.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass, field

from openai.types.chat import ChatCompletionChunk

# Between the text of two rounds (before and after a tool run) and before what the planner adds
# itself: a new paragraph, as the worker does after a stream its final message does not continue.
from athenic.orchestrator.events import PARAGRAPH


@dataclass
class ToolCall:
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class Round:
    """One streamed reply of the model, put together."""

    content: str = ""  # as the model wrote it, for the conversation sent back to it
    calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    total_tokens: int | None = None  # None: the server sent no usage


class AnswerText:
    """The answer as the client reads it while it is written, sent through ``say`` piece by piece.

    Each round's text is stripped as a whole answer would be (leading whitespace dropped,
    trailing whitespace held back until more text follows it), and rounds are separated by a
    paragraph, so ``text`` is always exactly what was sent.
    """

    def __init__(self, say: Callable[[str], Awaitable[None]]) -> None:
        self._say = say
        self._sent: list[str] = []  # joined once at the end: an answer may come in thousands of pieces
        self._held = ""
        self._round_has_text = False

    def new_round(self) -> None:
        self._held = ""  # trailing whitespace of the last round is never sent
        self._round_has_text = False

    @property
    def text(self) -> str:
        return "".join(self._sent)

    @property
    def round_has_text(self) -> bool:
        return self._round_has_text

    async def add(self, piece: str) -> None:
        if not self._round_has_text:
            piece = piece.lstrip()
            if not piece:
                return
            self._held = PARAGRAPH if self._sent else ""
            self._round_has_text = True
        body = piece.rstrip()
        if not body:
            self._held += piece
            return
        sent = self._held + body
        self._held = piece[len(body):]
        self._sent.append(sent)
        await self._say(sent)

    async def paragraph(self, extra: str) -> None:
        """Text the planner adds itself (a note, a fallback), as a paragraph of its own."""
        sent = (PARAGRAPH if self._sent else "") + extra
        self._sent.append(sent)
        self._held = ""
        await self._say(sent)


async def read_round(chunks: AsyncIterable[ChatCompletionChunk], answer: AnswerText) -> Round:
    """Read one streamed reply to its end, passing its text on as it comes."""
    got = Round()
    content: list[str] = []
    calls: dict[int, ToolCall] = {}
    answer.new_round()
    async for chunk in chunks:
        if chunk.usage is not None:
            got.total_tokens = chunk.usage.total_tokens
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        delta = choice.delta
        for piece in (delta.content, delta.refusal):
            if piece:
                content.append(piece)
                await answer.add(piece)
        for fragment in delta.tool_calls or ():
            call = calls.setdefault(fragment.index, ToolCall())
            call.id = call.id or fragment.id or ""  # some servers repeat the id in every fragment
            if fragment.function is not None:
                call.name += fragment.function.name or ""
                call.arguments += fragment.function.arguments or ""
        if choice.finish_reason is not None:
            got.finish_reason = choice.finish_reason
    got.content = "".join(content)
    got.calls = [calls[index] for index in sorted(calls)]
    for number, call in enumerate(got.calls):
        call.id = call.id or f"call_{number}"  # the tool's result must name the call it answers
    return got
