"""Counting the tokens of what goes to a model, before it goes. Pure.

A ``Tokenizer`` counts the tokens of a text. ``ByteBound``, the default, counts UTF-8 bytes:
a byte-level BPE (the OpenAI encodings, and every tokenizer that falls back to bytes) never
makes a token of less than one byte, so the count is a hard upper bound on the true one,
whatever the model. An exact tokenizer for the OpenAI encodings is the ``tokens`` extra
(``router.models.tokens.OpenAITokenizer``).

A request costs more than the text of its messages: each message is framed by a few special
tokens (OpenAI's chat format: three per message, one more with a name), each tool call by
its name and the JSON around its arguments, and the reply is primed with three. Those are
counted here with fixed allowances (``MESSAGE_FRAMING``, ``CALL_FRAMING``, ``REPLY_PRIMING``)
that are at least what OpenAI documents; the tools offered are counted as the JSON of their
schemas, which is longer than any provider's rendering of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, final, runtime_checkable

import msgspec

from .events import Message

__all__ = [
    "CALL_FRAMING",
    "MESSAGE_FRAMING",
    "REPLY_PRIMING",
    "ByteBound",
    "Tokenizer",
    "message_tokens",
    "tools_tokens",
]

MESSAGE_FRAMING = 4  # role and separators around each message (OpenAI: 3, +1 with a name)
CALL_FRAMING = 8  # a tool call's id, type and the JSON around its name and arguments
REPLY_PRIMING = 3  # the assistant header the reply is primed with


@runtime_checkable
class Tokenizer(Protocol):
    """Counts tokens. ``exact``: the count is the model's own; otherwise it is an upper
    bound (never less than the model's count)."""

    name: str
    exact: bool

    def count(self, text: str) -> int: ...


@final
class ByteBound:
    """UTF-8 bytes: an upper bound on the tokens of any byte-level BPE."""

    name = "utf8-bytes"
    exact = False

    def count(self, text: str) -> int:
        return len(text) if text.isascii() else len(text.encode())


def message_tokens(tokenizer: Tokenizer, message: Message) -> int:
    """The tokens one message costs in a request: its text, its calls and their framing."""
    count = tokenizer.count
    total = MESSAGE_FRAMING + count(message.content)
    if message.name:
        total += 1 + count(message.name)
    if message.call_id:
        total += count(message.call_id)
    for call in message.tool_calls:
        total += CALL_FRAMING + count(call.id) + count(call.name) + count(call.arguments)
    return total


def tools_tokens(tokenizer: Tokenizer, schemas: Sequence[dict[str, Any]]) -> int:
    """The tokens the tools offered cost in a request (the JSON of their schemas), and the
    reply's priming: what a request costs beyond its messages."""
    if not schemas:
        return REPLY_PRIMING
    return REPLY_PRIMING + tokenizer.count(msgspec.json.encode(list(schemas)).decode())
