"""The OpenAI Chat Completions protocol: OpenAI, Azure OpenAI, vLLM, llama.cpp server, Ollama.

Needs the ``providers`` extra (httpx). Tool calls go both ways: router's tool schemas are
sent as functions, the model's calls come back as ProposedCalls whose arguments router
validates (malformed JSON from the model becomes a rejection fed back to it, not an error).
With ``stream=True`` each piece of text or of a call's arguments is passed to ``on_delta``
as it arrives, and the usage is asked for in the stream's last chunk.

Azure OpenAI: ``base_url=https://RESOURCE.openai.azure.com/openai/deployments/DEPLOYMENT``,
``params={"api-version": "..."}`` and ``headers={"api-key": KEY}``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, final

import httpx
import msgspec

from ..core.events import Message, Usage
from ..core.protocols import ModelTurn, ProposedCall, StreamDelta
from ..core.streams import ServerSentEvent
from ..core.tools import Retry
from ..errors import ModelResponseInvalid
from .http import DEFAULT_RETRY, Transport, decode_response, incomplete

__all__ = ["OpenAIModel"]


class _Function(msgspec.Struct):
    name: str = ""
    arguments: str = ""


class _Call(msgspec.Struct):
    id: str = ""
    function: _Function = msgspec.field(default_factory=_Function)
    index: int = 0


class _Message(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_Call] | None = None
    refusal: str | None = None  # the model declined: its explanation is the answer


class _Choice(msgspec.Struct):
    message: _Message | None = None
    delta: _Message | None = None
    finish_reason: str | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Completion(msgspec.Struct):
    choices: list[_Choice] = []
    usage: _Usage | None = None
    model: str = ""


@final
class OpenAIModel:
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    api_key: defaults to the OPENAI_API_KEY environment variable; none is sent if empty.
    options: further request fields (temperature, max_tokens, seed ...), sent as given.
    max_tokens_field: the request field that caps an answer's tokens, where a run's cap
        (``respond(max_tokens=)``) goes: OpenAI's ``max_completion_tokens``; an endpoint
        that knows only the older field takes ``"max_tokens"``.
    timeout_s: for a whole response, or for the longest silence in a stream; max_stream_s
        bounds a whole stream (none by default: a long answer that keeps coming is fine).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        stream: bool = False,
        on_delta: Callable[[StreamDelta], None] | None = None,
        options: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        timeout_s: float = 60.0,
        max_stream_s: float | None = None,
        retry: Retry = DEFAULT_RETRY,
        max_retry_after_s: float = 60.0,
        client: httpx.AsyncClient | None = None,
        max_tokens_field: str = "max_completion_tokens",
    ) -> None:
        self.name = model
        self.max_tokens_field = max_tokens_field
        self.stream = stream
        self.options = options or {}
        key = os.environ.get("OPENAI_API_KEY", "") if api_key is None else api_key
        auth = {"authorization": f"Bearer {key}"} if key else {}
        self.transport = Transport(
            base_url,
            headers={**auth, **(headers or {})},
            params=params,
            timeout_s=timeout_s,
            max_stream_s=max_stream_s,
            retry=retry,
            max_retry_after_s=max_retry_after_s,
            client=client,
            on_delta=on_delta,
        )

    async def respond(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]],
        *,
        max_tokens: int | None = None,
    ) -> ModelTurn:
        body: dict[str, Any] = {
            "model": self.name,
            "messages": [_message(m) for m in messages],
            **self.options,
        }
        if max_tokens is not None:  # the run's cap: what its ceilings leave for this answer
            field = self.max_tokens_field
            body[field] = min(body.get(field, max_tokens), max_tokens)
        if tools:
            body["tools"] = list(tools)
        if not self.stream:
            return self._decode(await self.transport.post_json("chat/completions", body, self.name))
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        return await self.transport.post_stream(
            "chat/completions", body, self.name, self._read_stream, self._decode
        )

    async def aclose(self) -> None:
        await self.transport.aclose()

    def _decode(self, raw: bytes) -> ModelTurn:
        """A whole (not streamed) response as a turn."""
        return self._turn(decode_response(self.name, raw, _Completion))

    def _turn(self, completion: _Completion) -> ModelTurn:
        if not completion.choices or completion.choices[0].message is None:
            raise ModelResponseInvalid(self.name, "the response has no choices")
        message = completion.choices[0].message
        calls = tuple(
            ProposedCall(c.id, c.function.name, c.function.arguments)
            for c in message.tool_calls or ()
        )
        usage = completion.usage or _Usage()
        return ModelTurn(
            text=message.content or message.refusal or "",
            tool_calls=calls,
            usage=Usage(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens),
            model=self.name,
            served_model=completion.model,
        )

    async def _read_stream(self, events: AsyncIterator[ServerSentEvent], attempt: int) -> ModelTurn:
        text: list[str] = []
        calls: dict[int, list[str]] = {}  # index -> [id, name, arguments...]
        usage, model, done = _Usage(), "", False
        async for event in events:
            if event.data.strip() == "[DONE]":
                done = True
                break
            chunk = decode_response(self.name, event.data, _Completion)
            model = chunk.model or model
            usage = chunk.usage or usage
            for choice in chunk.choices:
                delta = choice.delta or _Message()
                piece = delta.content or delta.refusal
                if piece:
                    text.append(piece)
                    self.transport.emit(StreamDelta(model=self.name, text=piece, attempt=attempt))
                for call in delta.tool_calls or ():
                    parts = calls.setdefault(call.index, ["", ""])
                    parts[0] = parts[0] or call.id
                    parts[1] = parts[1] or call.function.name
                    parts.append(call.function.arguments)
                    self.transport.emit(
                        StreamDelta(
                            model=self.name,
                            call_index=call.index,
                            call_id=call.id,
                            call_name=call.function.name,
                            arguments=call.function.arguments,
                            attempt=attempt,
                        )
                    )
        if not done:
            raise incomplete(self.name, attempt)
        proposed = tuple(ProposedCall(p[0], p[1], "".join(p[2:])) for _, p in sorted(calls.items()))
        return ModelTurn(
            text="".join(text),
            tool_calls=proposed,
            model=self.name,
            served_model=model,
            usage=Usage(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens),
        )


def _message(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.call_id, "content": m.content}
    if m.role == "assistant" and m.tool_calls:
        return {
            "role": "assistant",
            "content": m.content or None,
            "tool_calls": [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in m.tool_calls
            ],
        }
    return {"role": m.role, "content": m.content}
